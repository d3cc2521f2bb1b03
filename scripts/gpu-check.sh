#!/usr/bin/env bash
# The GPU check, in one call on a machine with a GPU (no downloads needed there): build the package with
# its CUDA module, run the test suite (CUDA cases included), run the CUDA cases under
# compute-sanitizer memcheck, and run the CUDA benchmarks. Results go under $OUT (default ./gpu-out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
status=0
step() { echo "== $*"; }

step "build"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python -m pip install --no-build-isolation --no-deps -q . > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
python -m commkernels info | tee "$OUT/info.txt"

step "tests (all devices)"
python -m pytest -q -p no:cacheprovider tests 2>&1 | tee "$OUT/tests.txt" | tail -15
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "compute-sanitizer memcheck over the CUDA tests"
compute-sanitizer --tool memcheck --target-processes all --error-exitcode 9 \
  python -m pytest -q -p no:cacheprovider -k cuda tests > "$OUT/memcheck.txt" 2>&1
[ $? -eq 0 ] || status=1
tail -15 "$OUT/memcheck.txt"

step "benchmarks (cuda)"
python -m commkernels bench --device cuda --json "$OUT/cuda.json" 2>&1 | tee "$OUT/bench.txt" | tail -40
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
exit $status
