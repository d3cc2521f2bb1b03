"""Where a small aggregate call's time goes on the GPU: per-call microseconds of torch and commkernels with a
synchronize after every call (as the benchmark does) and without (the host's share), the raw kernel binding,
and a cProfile of the public calls. Run on a GPU machine (scripts/gpu-check.sh runs it):
python scripts/gpu-overhead.py [OUT_DIR]  (writes OUT_DIR/overhead.txt)."""
import cProfile
import io
import pstats
import sys
import time

import torch

import commkernels.aggregate as A
from commkernels import _backend

dev = torch.device("cuda")
X = torch.randn(10, 100_000, device=dev)
L = list(X.unbind(0))
sync = torch.cuda.synchronize


def per_call(fn, reps=300, each_sync=True):
    fn()
    sync()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
        if each_sync:
            sync()
    sync()
    return (time.perf_counter() - start) / reps * 1e6


def raw_median():  # the kernel binding alone: no checks, no op, no Updates
    out = torch.empty(X.shape[1], device=dev)
    stream = torch.cuda.current_stream().cuda_stream
    _backend._cuda.aggregate_coordinate_rule([X], 10, "median", "mean", 0, out, stream)
    return out


cases = {
    "torch X.mean(0)": lambda: X.mean(0),
    "torch X.median(0)": lambda: X.median(0),
    "ck mean(X)": lambda: A.mean(X),
    "ck mean(list)": lambda: A.mean(L),
    "ck median(X)": lambda: A.median(X),
    "ck trimmed_mean(X, 2)": lambda: A.trimmed_mean(X, 2),
    "ck gram(X)": lambda: A.gram(X),
    "ck krum(X, 2)": lambda: A.krum(X, 2),
    "raw median binding": raw_median,
    "sync only": lambda: None,
}
lines = []
for name, fn in cases.items():
    lines.append(f"{name:32s} sync each: {per_call(fn):8.1f} us   no sync: {per_call(fn, each_sync=False):8.1f} us")
for name in ("ck median(X)", "ck mean(X)", "ck krum(X, 2)"):
    prof = cProfile.Profile()
    fn = cases[name]
    prof.enable()
    for _ in range(200):
        fn()
        sync()
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(12)
    lines.append(f"---- cProfile {name} (200 calls, sync each)\n" + s.getvalue())
text = "\n".join(lines)
print(text)
if len(sys.argv) > 1:
    with open(f"{sys.argv[1]}/overhead.txt", "w") as f:
        f.write(text)
