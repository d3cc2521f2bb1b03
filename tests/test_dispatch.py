"""The baseline (non-AVX-512) CPU paths give bitwise the same results as the dispatched ones.

This machine has AVX-512, so every other test runs the AVX-512 versions; COMMKERNELS_DISABLE_AVX512
makes a fresh process take the portable paths that a wheel runs elsewhere.
"""

from __future__ import annotations

import json

import commkernels

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
    assert commkernels.info()["cpu"]["simd"] in ("avx512 (runtime dispatch)", "baseline x86-64")
