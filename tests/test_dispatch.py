"""The baseline (non-AVX-512) CPU paths give bitwise the same results as the dispatched ones.

This machine has AVX-512, so every other test runs the AVX-512 versions; COMMKERNELS_DISABLE_AVX512
makes a fresh process take the portable paths that a wheel runs elsewhere. Likewise it has AMX, and
COMMKERNELS_DISABLE_AMX sends a fresh process down the AVX-512 routes that AMX replaces.
"""

from __future__ import annotations

import json

import numpy as np
import torch

import commkernels
from commkernels.reference import aggregate_gram as R

SCRIPT = r"""
import json, sys
import numpy as np
import commkernels
from commkernels import compress
rng = np.random.default_rng(7)
out = {"simd": commkernels.info()["cpu"]["simd"]}
for dtype in ("float32", "float64", "float16"):
    for n, k in ((5000, 50), (300001, 3000), (300001, 150000), (70000, 70000)):
        x = rng.standard_normal(n).astype(dtype)
        x[rng.integers(0, n, 20)] = 0.5  # ties
        g = rng.standard_normal(n).astype(dtype)
        r = x.copy()
        m = compress.topk(x, k)
        e = compress.ef_topk_(g, r, k)
        q = compress.randk(x, k, 3, n)
        out[f"{dtype}-{n}-{k}"] = [a.tobytes().hex() for a in
                                   (m.values, m.indices, e.values, e.indices, r, q.values, q.indices)]
json.dump(out, sys.stdout)
"""


def test_baseline_paths_match_dispatched_paths(run_python):
    dispatched, baseline = (json.loads(run_python(SCRIPT, avx512)) for avx512 in (True, False))
    assert baseline.pop("simd") == "baseline x86-64"
    simd = dispatched.pop("simd")
    assert dispatched.keys() == baseline.keys()
    for case in dispatched:
        assert dispatched[case] == baseline[case], f"{case}: baseline path differs ({simd} vs baseline)"


def test_info_reports_simd():
    simd = commkernels.info()["cpu"]["simd"]
    assert simd in ("avx512 + amx-bf16 (runtime dispatch)", "avx512 (runtime dispatch)", "baseline x86-64")
    # where Linux shows the CPU's AMX, the process must get to use it (else its tests test nothing)
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        flags = ""
    if " amx_bf16" in flags and " amx_tile" in flags and simd != "baseline x86-64":
        assert "amx" in simd


AMX_SCRIPT = r"""
import json, sys
import numpy as np, torch
import commkernels
from commkernels import aggregate as A
rng = np.random.default_rng(3)
X = torch.from_numpy(rng.standard_normal((40, 32 * 20 + 9))).to(torch.bfloat16)
X[7, 300] = float("nan")
W = rng.standard_normal((20, 40)) * (rng.random((20, 40)) < 0.6)
W[:, 7] = 0.0
out = A.combine(X, W).to(torch.float64).numpy()
json.dump({"simd": commkernels.info()["cpu"]["simd"], "out": out.tolist(), "W": W.tolist()}, sys.stdout)
"""


def test_combine_avx512_route_where_amx_is_disabled(run_python):
    """COMMKERNELS_DISABLE_AMX sends bfloat16 combines of >= 16 outputs down the AVX-512 route, which an
    AMX machine otherwise never runs for them: within the same bound of the float64 result."""
    done = json.loads(run_python(AMX_SCRIPT, amx=False))
    assert "amx" not in done["simd"]
    W, out = np.array(done["W"]), np.array(done["out"])
    rng = np.random.default_rng(3)
    Xr = torch.from_numpy(rng.standard_normal((40, 32 * 20 + 9))).to(torch.bfloat16).to(torch.float64).numpy()
    Xr[7, 300] = np.nan  # weight 0 in every output: reaches none
    ref = R.combine(np.nan_to_num(Xr), W)
    tol = (40 + 2) * 2.0**-24 * (np.abs(W) @ np.abs(np.nan_to_num(Xr))) + 2.0**-8 * np.abs(ref) * 1.01 + 2.0**-134
    assert np.all(np.abs(out - ref) <= tol)
