#!/usr/bin/env bash
# Runs a command (e.g. pytest) against a build made with COMMKERNELS_SANITIZE=ON.
# The extension is a shared library loaded by an uninstrumented python, so the ASan runtime must be
# preloaded; leak detection is off because the interpreter itself never frees some allocations.
set -euo pipefail
asan=$(${CXX:-g++} -print-file-name=libasan.so)
ubsan=$(${CXX:-g++} -print-file-name=libubsan.so)
export LD_PRELOAD="$asan:$ubsan${LD_PRELOAD:+:$LD_PRELOAD}"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
exec "$@"
