#!/usr/bin/env bash
# In-process A/B of the CPU Gram route: csrc/aggregate/gram_cpu.cpp at REV (default HEAD) against the working
# tree's, both in one binary (bench/ab/gram_ab.cpp: alternating calls, best of 7, outputs compared bit for bit),
# with the package's Release flags. The bench's numbers drift ~10% between runs on a shared VM; this does not.
#   scripts/ab-gram.sh [REV] [CASE ...]     CASE = "n d [bf16] [nan]" (default: the bench's n = 64 shapes)
#   environment: OMP_NUM_THREADS (default 2), R (combine's output rows), CENTER (mean|zero), WEIGHTS (uniform), CXX
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:-HEAD}
shift || true
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags="-O3 -DNDEBUG -std=gnu++17 -fno-stack-protector -fopenmp -Wno-psabi -Icsrc"
git show "$rev:csrc/aggregate/gram_cpu.cpp" > "$work/before.cpp"
# the old file's relative includes resolve against the real source folder
${CXX:-g++} $flags -iquote csrc/aggregate -DCK_BACKEND=before -c -x c++ "$work/before.cpp" -o "$work/before.o"
${CXX:-g++} $flags -DCK_BACKEND=after -c csrc/aggregate/gram_cpu.cpp -o "$work/after.o"
${CXX:-g++} $flags -DCK_BACKEND=cpu bench/ab/gram_ab.cpp "$work/before.o" "$work/after.o" -o "$work/gram_ab"
[ $# -gt 0 ] || set -- "64 100000" "64 100000 bf16" "64 1000000" "64 1000000 bf16" "64 100000 bf16 nan"
status=0
for c in "$@"; do
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$work/gram_ab" $c || status=1
done
exit $status
