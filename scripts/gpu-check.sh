#!/usr/bin/env bash
# The GPU check, in one call on a machine with a GPU (nothing is downloaded there): build the package with
# its CUDA module, run the CUDA test cases, run them again under compute-sanitizer memcheck, and run the
# CUDA benchmarks. Everything lands under $OUT (default ./gpu-out), at most 8 files:
#   gpu-check.log   every stage's output        memcheck.txt   the sanitizer's report
#   cuda-<family>.json                          one benchmark file per family
#   overhead.txt    where a small aggregate call's microseconds go (scripts/gpu-overhead.py)
# Each stage has its own time limit (seconds, overridable), so a slow or hung stage costs only its share
# and the files of the stages before it still come back; the defaults add up to under 10 minutes (on an
# H200 a whole run took 4.5-6 minutes). Exit status: 0 when every stage passed.
# Settings (environment): CK_ARCHS (90: the H100/H200; CI builds 80;90); T_BUILD T_TESTS T_MEMCHECK T_BENCH
# T_OVERHEAD (seconds; T_BENCH per family; keep T_MEMCHECK >= 150 even for a CK_TESTS subset: the sanitized
# processes take ~100 s to start, and 120 s cut an H100 run off after 2 cases); CK_SKIP_BUILD (set: test
# what is installed); CK_FAMILIES; CK_TESTS (the -k expression, default cuda); CK_BENCH_ARGS (default:
# every size, 10 timed calls per function).
# Needs pytest-xdist and pytest-timeout (the GPU machines' image has both).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # absolute: some stages run elsewhere
PY=${PYTHON:-python3}
LOG="$OUT/gpu-check.log"
status=0
stage() { echo "== $(date +%T) $*" | tee -a "$LOG"; }
fail() { echo "!! $*" | tee -a "$LOG"; status=1; }

stage "machine"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; nproc;
  $PY -c "import torch; print('torch', torch.__version__, torch.version.cuda)"; } >> "$LOG" 2>&1

stage "build (CUDA architectures ${CK_ARCHS:-90})"
[ -n "${CK_SKIP_BUILD:-}" ] || COMMKERNELS_CUDA=ON timeout "${T_BUILD:-180}" \
  $PY -m pip install --no-build-isolation --no-deps -q -Ccmake.define.CMAKE_CUDA_ARCHITECTURES="${CK_ARCHS:-90}" . \
  >> "$LOG" 2>&1 || { fail "build"; exit 1; }
(cd /tmp && $PY -m commkernels info) >> "$LOG" 2>&1 || { fail "commkernels info"; exit 1; }

# The tests and the sanitizer run side by side: the tests are mostly host work (hypothesis, references)
# and the sanitized run is slow on its own. Without the caching allocator every tensor is its own
# allocation, so memcheck sees an access past its end instead of into a neighbour in the same block.
# torch.compile and opcheck cases stay out of the sanitized run: they add little kernel coverage and much
# host time (inductor's worker processes would run under the sanitizer too); it runs in 6 processes since
# torch under memcheck is slow to start (20 cases took 150 s in one process on an H200).
stage "tests (-k '${CK_TESTS:-cuda}') and, beside them, the same cases under compute-sanitizer memcheck"
timeout "${T_TESTS:-150}" $PY -m pytest -q -p no:cacheprovider -n 8 --timeout 120 --timeout-method thread \
  -k "${CK_TESTS:-cuda}" -rfEs tests > "$OUT/tests.txt" 2>&1 &
tests_pid=$!
COMMKERNELS_HYPOTHESIS_PROFILE=smoke PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout "${T_MEMCHECK:-180}" \
  compute-sanitizer --tool memcheck --target-processes all --error-exitcode 9 --print-limit 20 \
  $PY -m pytest -q -p no:cacheprovider -n 6 -k "(${CK_TESTS:-cuda}) and not compile and not opcheck" tests \
  > "$OUT/memcheck.txt" 2>&1
memcheck_rc=$?
wait $tests_pid || fail "tests"
cat "$OUT/tests.txt" >> "$LOG" && rm "$OUT/tests.txt"
[ $memcheck_rc -eq 0 ] || fail "memcheck (exit $memcheck_rc; 9: errors found, 124: timed out)"
tail -5 "$OUT/memcheck.txt" >> "$LOG"

for family in ${CK_FAMILIES:-compress aggregate moe graph}; do
  stage "benchmarks: $family (cuda)"
  timeout "${T_BENCH:-50}" $PY -m commkernels bench --device cuda --family "$family" ${CK_BENCH_ARGS:---repeat 10} \
    --json "$OUT/cuda-$family.json" >> "$LOG" 2>&1 || fail "bench $family"
done
stage "small-call costs (scripts/gpu-overhead.py)"
(cd /tmp && timeout "${T_OVERHEAD:-30}" $PY "$OLDPWD/scripts/gpu-overhead.py" "$OUT") >> "$LOG" 2>&1 || fail "overhead"
stage "done (status $status)"
grep -E "^(==|!!)|passed|failed|ERROR|FAILED" "$LOG" | tail -40
exit $status
