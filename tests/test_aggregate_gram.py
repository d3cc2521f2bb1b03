"""The Gram route of commkernels.aggregate (gram, combine, krum, geometric_median, centered_clipping, mda,
flag, nnm, bucketing, clip, arc, pre=) against the float64 references, plus invariants and bad inputs.

Tolerances are derived, not tuned:
- gram: an entry is a sum of products accumulated in float32 within blocks of at most 4096 coordinates
  (16 lanes of at most 256 terms, then a 4-level lane tree), float64 across blocks; the centered inputs
  carry one more rounding. Bound: |dG_ik| <= GAMMA * |x_i - c| |x_k - c| with
  GAMMA = (256 + 4 + 3) * 2^-24 (float64 X: the same count times 2^-53).
- selections: a distance D_ik = G_ii + G_kk - 2 G_ik is off by at most 4 GAMMA max(G_ii, G_kk); a kernel
  selection that differs from the reference's must be within that many ulps of tied (near_optimal).
- combine: out = sum_i w_i x_i in float32, rounded to X's dtype: |err| <= (n + 1) 2^-24 sum |w_i x_i| +
  half an ulp of the dtype. The AMX route (bfloat16 X, >= 16 outputs, CPUs with AMX) adds the products of
  each weight's two low bfloat16 parts (<= 2^-8 |w|) first: n 2^-32 sum |w_i x_i| more; a row of equal
  weights c sums the x_i and multiplies by c once: one rounding more, as the (n + 2) counts.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import commkernels
from commkernels import aggregate as A
from commkernels.aggregate import _gram_host as host
from commkernels.reference import aggregate_gram as R

DTYPES = ("float32", "float64", "float16", "bfloat16")
UNIT = {"float32": 2.0**-24, "float64": 2.0**-53, "float16": 2.0**-11, "bfloat16": 2.0**-8}
# half the subnormal spacing: the rounding error of a result below the dtype's normal range is absolute
SUBNORMAL = {"float32": 2.0**-150, "float64": 2.0**-1075, "float16": 2.0**-25, "bfloat16": 2.0**-134}


def acc_unit(dtype):
    return 2.0**-53 if dtype == "float64" else 2.0**-24


def gamma(dtype):
    return (256 + 4 + 3) * acc_unit(dtype)


def to_f64(a):
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().to(torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


def make(values: np.ndarray, dtype: str, framework: str):
    t = torch.from_numpy(np.ascontiguousarray(values)).to(getattr(torch, dtype))
    return t if framework == "torch" else t.numpy()


def rounded(values, dtype):
    return to_f64(torch.from_numpy(np.asarray(values, np.float64)).to(getattr(torch, dtype)))


@st.composite
def cases(draw, n_min=1, n_max=40, d_max=64, dtypes=DTYPES):
    dtype = draw(st.sampled_from(dtypes))
    framework = "torch" if dtype == "bfloat16" else draw(st.sampled_from(["numpy", "torch"]))
    n = draw(st.integers(n_min, n_max))
    d = draw(st.integers(1, d_max))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    common = draw(st.sampled_from([0.0, 1.0, 30.0]))  # a shared component: what centering is for
    values = common * rng.standard_normal(d) + rng.standard_normal((n, d))
    as_list = draw(st.booleans())
    return values, dtype, framework, as_list


def build(values, dtype, framework, as_list):
    X = make(values, dtype, framework)
    return [X[i].clone() if framework == "torch" else X[i].copy() for i in range(len(X))] if as_list else X


# ---- gram and combine ---------------------------------------------------------------------------------------

@given(cases(n_max=100, d_max=300), st.sampled_from(["mean", "zero", "vector"]))
def test_gram_matches_reference(case, center):
    values, dtype, framework, as_list = case
    X = build(values, dtype, framework, as_list)
    Xr = rounded(values, dtype)
    if center == "vector":
        cvec = make(values.mean(axis=0) + 0.5, dtype, framework)
        G, norms = A.gram(X, cvec)
        Gr, nr = R.gram(Xr, to_f64(cvec))
    else:
        G, norms = A.gram(X, center == "mean")
        Gr, nr = R.gram(Xr, center == "mean")
    G, norms = to_f64(G), to_f64(norms)
    # the centered inputs themselves carry one rounding of the acc type: ~ 2 u |x| |c| per product term
    scale = np.sqrt(np.maximum(np.diag(Gr), 0)) + np.sqrt(np.sum(Xr**2, axis=1))
    tol = gamma(dtype) * np.outer(scale, scale) + 1e-300
    assert np.all(np.abs(G - Gr) <= tol), np.max(np.abs(G - Gr) / tol)
    assert np.allclose(norms, nr, rtol=0, atol=float(np.sqrt(np.max(np.diag(tol))) + 1e-300) * 2 + 1e-12)


@pytest.mark.parametrize("n", [7, 40])  # 40 rows: blocks of 512 coordinates, lanes flushed every 8 blocks
def test_gram_many_chunks_and_threads(n):
    """Chunk boundaries (d past 32768 * 2) and thread counts never change a bit."""
    rng = np.random.default_rng(7)
    X = (rng.standard_normal((n, 150_001)) + 5).astype(np.float32)
    before = commkernels.get_num_threads()
    try:
        commkernels.set_num_threads(1)
        G1, _ = A.gram(X)
        out1 = A.krum(X, 2, m=2)
        commkernels.set_num_threads(2)
        G2, _ = A.gram(X)
        out2 = A.krum(X, 2, m=2)
    finally:
        commkernels.set_num_threads(before)
    assert G1.tobytes() == G2.tobytes()
    assert out1.tobytes() == out2.tobytes()
    Gr, _ = R.gram(X.astype(np.float64))
    scale = np.sqrt(np.diag(Gr)) + np.sqrt(np.sum(X.astype(np.float64) ** 2, axis=1))
    assert np.all(np.abs(G1 - Gr) <= gamma("float32") * np.outer(scale, scale))


AMX_OUTPUTS = 16  # combine's AMX route (bfloat16 X on CPUs with AMX) takes 16 or more output rows


def combine_tolerance(W, Xr, ref, dtype):
    n = W.shape[1]
    mag = np.abs(W) @ np.abs(Xr)
    return (n * (1 + 2.0**-8) + 2) * acc_unit(dtype) * mag + UNIT[dtype] * np.abs(ref) * 1.01 + SUBNORMAL[dtype] + 1e-300


@given(cases(n_max=60, d_max=200), st.one_of(st.integers(1, 5), st.integers(AMX_OUTPUTS, 40)), st.booleans(),
       st.data())
def test_combine_matches_reference(case, r, equal_rows, data):
    values, dtype, framework, as_list = case
    n = len(values)
    X = build(values, dtype, framework, as_list)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    keep = rng.random((r, n)) < 0.7
    # equal_rows: NNM's and bucketing's weights, one value per row (the AMX route scales the row's sum)
    W = keep / rng.integers(1, n + 1, size=(r, 1)) if equal_rows else rng.standard_normal((r, n)) * keep
    out = to_f64(A.combine(X, W))
    ref = R.combine(rounded(values, dtype), W)
    assert out.shape == (r,) + values.shape[1:]
    assert np.all(np.abs(out - ref) <= combine_tolerance(W, rounded(values, dtype), ref, dtype))


@pytest.mark.parametrize("equal_rows", [False, True])
def test_combine_bfloat16_tiny_and_subnormal_values(equal_rows):
    """The AMX tile unit reads subnormals as 0 and flushes subnormal results: the units holding a value
    below 2^-40, and a W holding a weight below it, must take the AVX-512 route and keep IEEE results."""
    rng = np.random.default_rng(11)
    n, d, r = 40, 32 * 9 + 7, 20
    values = rng.standard_normal((n, d))
    values[:, 40:72] *= 1e-39  # one whole unit of bfloat16 subnormals: its sums are subnormal too
    values[3, 100] = 1e-20  # one tiny value in another unit
    W = (rng.random((r, n)) < 0.5) / 7.0 if equal_rows else rng.standard_normal((r, n))
    X = make(values, "bfloat16", "torch")
    Xr = rounded(values, "bfloat16")
    for weights in (W, np.where(np.arange(n) == 5, 1e-45, W)):  # the second: a tiny weight, the whole call
        out, ref = to_f64(A.combine(X, weights)), R.combine(Xr, weights)
        assert np.all(np.abs(out - ref) <= combine_tolerance(weights, Xr, ref, "bfloat16"))
        assert np.count_nonzero(out[:, 40:72]) >= 0.9 * np.count_nonzero(ref[:, 40:72])


def test_combine_zero_weight_skips_non_finite():
    X = np.ones((3, 5), np.float32)
    X[1] = np.nan
    out = A.combine(X, [[0.5, 0.0, 0.5]])
    assert np.all(out == 1.0)


@pytest.mark.parametrize("dtype, outputs", [("float32", 9), ("float64", 9), ("bfloat16", 9),
                                             ("bfloat16", AMX_OUTPUTS + 4)])
def test_combine_zero_weights_same_bits_with_and_without_a_non_finite_block(dtype, outputs):
    """Where every row of a block is finite, zero weights are multiplied in instead of skipped; where one is
    not, they are skipped. Both must give the same bits: a NaN in row 3 (weight 0 for output 0) changes
    nothing in output 0 and only its own coordinate in output 1."""
    rng = np.random.default_rng(5)
    n, d = 10, 3 * 2048 + 37  # several coordinate blocks and a tail
    X = make(rng.standard_normal((n, d)), dtype, "torch")
    W = rng.standard_normal((outputs, n)) * (rng.random((outputs, n)) < 0.6)
    W[0, 3], W[1, 3] = 0.0, 0.5
    clean = to_f64(A.combine(X, W))
    for j in (2100, d - 5):  # inside a block of whole lane vectors, and in the tail
        poisoned = X.clone()
        poisoned[3, j] = float("nan")
        out = to_f64(A.combine(poisoned, W))
        others = np.ones(d, bool)
        others[j] = False
        assert out[0].tobytes() == clean[0].tobytes()
        assert np.isnan(out[1, j]) and out[1, others].tobytes() == clean[1, others].tobytes()


# ---- the rules against their references (float64: selections agree exactly on continuous data) ----------

def _f(n, need):  # the largest f the bound allows (at least 0), drawn below it
    return {"2f+3": (n - 3) // 2, "2f": (n - 1) // 2, "4f+3": (n - 3) // 4, "f": n - 1}[need]


@given(cases(n_min=3, n_max=30, dtypes=("float64",)), st.data())
def test_krum_matches_reference(case, data):
    values, dtype, framework, as_list = case
    n = len(values)
    f = data.draw(st.integers(0, _f(n, "2f+3")))
    m = data.draw(st.integers(1, n - f))
    neighbors = data.draw(st.sampled_from(["n-f-2", "n-f-1"]))
    reduce = data.draw(st.sampled_from(["mean", "none"]))
    out = A.krum(build(values, dtype, framework, as_list), f, m=m, neighbors=neighbors, reduce=reduce)
    ref = R.krum(values, f, m=m, neighbors=neighbors, reduce=reduce)
    np.testing.assert_allclose(to_f64(out), ref, rtol=1e-12, atol=1e-12)


@given(cases(n_min=3, n_max=40, dtypes=("float32", "float16", "bfloat16")), st.data())
def test_krum_low_precision_selects_near_optimal(case, data):
    values, dtype, framework, as_list = case
    n = len(values)
    f = data.draw(st.integers(0, _f(n, "2f+3")))
    m = data.draw(st.integers(1, n - f))
    X = build(values, dtype, framework, as_list)
    Xr = rounded(values, dtype)
    picked = to_f64(A.krum(X, f, m=m, reduce="none"))
    idx = []
    for row in picked:  # rows may coincide after rounding: each pick is one of the matching workers
        idx.append(next(int(i) for i in np.flatnonzero(np.all(Xr == row, axis=1)) if int(i) not in idx))
    scores = R.krum_scores(Xr, f)
    Gr, _ = R.gram(Xr)
    slack = 4 * gamma(dtype) * (n - f) * float(np.max(np.diag(Gr)) + np.max(np.sum(Xr**2, 1))) + 1e-300
    kth = sorted(scores)[m - 1]
    assert all(scores[i] <= kth + slack for i in idx)
    assert len(set(idx)) == m


@given(cases(n_min=1, n_max=30, dtypes=("float64",)), st.data())
def test_nnm_matches_reference(case, data):
    values, dtype, framework, as_list = case
    f = data.draw(st.integers(0, _f(len(values), "f")))
    out = A.nnm(build(values, dtype, framework, as_list), f)
    np.testing.assert_allclose(to_f64(out), R.nnm(values, f), rtol=1e-12, atol=1e-12)


@given(cases(n_min=1, n_max=9, dtypes=("float64",)), st.data())
def test_mda_matches_reference(case, data):
    values, dtype, framework, as_list = case
    f = data.draw(st.integers(0, _f(len(values), "2f")))
    out = A.mda(build(values, dtype, framework, as_list), f)
    np.testing.assert_allclose(to_f64(out), R.mda(values, f), rtol=1e-12, atol=1e-12)


@given(cases(n_min=1, n_max=30, dtypes=("float64",)), st.integers(1, 5), st.integers(0, 2**64 - 1))
def test_bucketing_matches_reference(case, s, seed):
    values, dtype, framework, as_list = case
    out = A.bucketing(build(values, dtype, framework, as_list), s, seed)
    np.testing.assert_allclose(to_f64(out), R.bucketing(values, s, seed), rtol=1e-12, atol=1e-12)


@given(cases(n_min=1, n_max=30), st.data())
def test_clip_and_arc_match_reference(case, data):
    values, dtype, framework, as_list = case
    n = len(values)
    X = build(values, dtype, framework, as_list)
    Xr = rounded(values, dtype)
    norms = np.sqrt(np.sum(Xr**2, axis=1))
    c = float(data.draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))) * float(np.median(norms))
    f = data.draw(st.integers(0, n - 1))
    for out, ref in ((A.clip(X, c), R.clip(Xr, c)), (A.arc(X, f), R.arc(Xr, f))):
        # a scale from fp32-accumulated norms (relative error <= GAMMA), then the combine's rounding
        tol = (2 * gamma(dtype) + UNIT[dtype]) * np.abs(Xr) + SUBNORMAL[dtype] + 1e-300
        assert np.all(np.abs(to_f64(out) - ref) <= tol)


@given(cases(n_min=1, n_max=25), st.sampled_from(["median", "zero", "array"]), st.data())
def test_geometric_median_matches_reference(case, start, data):
    values, dtype, framework, as_list = case
    n = len(values)
    X = build(values, dtype, framework, as_list)
    Xr = rounded(values, dtype)
    weights = None if data.draw(st.booleans()) else list(np.random.default_rng(n).random(n) + 0.1)
    s = start
    if start == "array":
        s = make(values[0] * 0.5, dtype, framework)
    iters = data.draw(st.integers(0, 8))
    spread = float(np.max(np.linalg.norm(Xr - Xr.mean(axis=0), axis=1))) + 1e-3
    nu = 0.1 * spread
    out = to_f64(A.geometric_median(X, nu=nu, max_iter=iters, tol=0.0, weights=weights, start=s))
    s_ref = to_f64(s) if start == "array" else start
    if start == "median":  # the start is the kernel's median (rounded to the dtype), as the rule uses it
        s_ref = to_f64(A.median(X if not as_list else build(values, dtype, framework, False)))
    ref = R.geometric_median(Xr, nu=nu, max_iter=iters, tol=0.0, weights=weights, start=s_ref)
    # A step is a smooth function of the distances: an error e in dist_i^2 (|e| <= GAMMA R^2 from G, R the
    # largest |x_i - start| or spread) changes beta_i = w_i / max(nu, dist_i) by at most a relative
    # e / (2 nu^2), so z moves by at most R e / (2 nu^2) per step; then the combine's rounding.
    R_ = spread + float(np.max(np.linalg.norm(Xr - to_f64(s_ref) if start != "zero" else Xr, axis=1)))
    tol = (1 + iters) * gamma(dtype) * R_**3 / (2 * nu**2) + 2 * UNIT[dtype] * np.abs(ref) + SUBNORMAL[dtype]
    assert np.all(np.abs(out - ref) <= tol), float(np.max(np.abs(out - ref) - tol))


@given(cases(n_min=1, n_max=25), st.integers(0, 6), st.data())
def test_centered_clipping_matches_reference(case, iters, data):
    values, dtype, framework, as_list = case
    X = build(values, dtype, framework, as_list)
    Xr = rounded(values, dtype)
    center = make(values.mean(axis=0) + 0.25, dtype, framework)
    tau = float(data.draw(st.sampled_from([0.1, 1.0, 10.0, 1e6])))
    out = to_f64(A.centered_clipping(X, center, tau, iters))
    ref = R.centered_clipping(Xr, to_f64(center), tau, iters)
    scale = np.max(np.abs(Xr)) + np.max(np.abs(to_f64(center))) + 1.0
    assert np.all(np.abs(out - ref) <= 64 * max(UNIT[dtype], acc_unit(dtype)) * scale * (1 + iters))


@given(cases(n_min=2, n_max=12, d_max=24, dtypes=("float64",)), st.data())
def test_flag_matches_reference(case, data):
    values, dtype, framework, as_list = case
    n, d = values.shape
    r = data.draw(st.integers(1, max(1, min(n, d) - 1)))
    lam = data.draw(st.sampled_from([0.0, 0.5]))
    iters = data.draw(st.integers(0, 3))
    out = to_f64(A.flag(build(values, dtype, framework, as_list), r=r, lam=lam, iters=iters))
    ref = R.flag(values, r=r, lam=lam, iters=iters)
    # Y Y^T is well defined only with a gap after the r-th singular value: skip near-degenerate draws
    g = values / np.linalg.norm(values, axis=1, keepdims=True)
    sv = np.linalg.svd(g.T, compute_uv=False)
    if r < len(sv) and sv[r - 1] - sv[r] < 1e-3 * sv[0]:
        return
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-6 * n)


def test_flag_low_precision_close_to_reference():
    rng = np.random.default_rng(3)
    values = 3.0 * rng.standard_normal(50) + rng.standard_normal((15, 50))
    for dtype in ("float32", "float16", "bfloat16"):
        X = make(values, dtype, "torch")
        out = to_f64(A.flag(X, r=1, iters=2))
        ref = R.flag(rounded(values, dtype), r=1, iters=2)
        assert np.max(np.abs(out - ref)) <= 64 * UNIT[dtype] * np.max(np.abs(ref)) * 15


@given(cases(n_min=3, n_max=30, dtypes=("float64",)), st.sampled_from(["n-2f", "n-2f-2"]), st.data())
def test_bulyan_matches_reference(case, theta, data):
    values, dtype, framework, as_list = case
    n = len(values)
    f = data.draw(st.integers(0, _f(n, "4f+3")))
    if theta == "n-2f-2" and n - 4 * f - 2 < 1:
        theta = "n-2f"
    out = A.bulyan(build(values, dtype, framework, as_list), f, theta=theta)
    np.testing.assert_allclose(to_f64(out), R.bulyan(values, f, theta=theta), rtol=1e-12, atol=1e-12)


# ---- pre= composition ----------------------------------------------------------------------------------------

@given(cases(n_min=5, n_max=24, dtypes=("float64",)), st.sampled_from(["nnm", "bucketing", "clip", "arc"]),
       st.data())
def test_pre_composition_equals_two_steps(case, kind, data):
    values, dtype, framework, as_list = case
    n = len(values)
    X = build(values, dtype, framework, as_list)
    params = {"nnm": {"f": 1}, "bucketing": {"s": 1, "seed": 5}, "clip": {"c": 2.0}, "arc": {"f": 1}}[kind]
    Y = {"nnm": lambda: R.nnm(values, 1), "bucketing": lambda: R.bucketing(values, 1, 5),
         "clip": lambda: R.clip(values, 2.0), "arc": lambda: R.arc(values, 1)}[kind]()
    f = data.draw(st.integers(0, (len(Y) - 3) // 2))
    # pre-aggregated rows often tie exactly (nnm of 1-D data has two distinct rows): a tie between
    # different rows is decided by rounding, so such draws are not comparable with exact selections
    scores = R.krum_scores(Y, f)
    near = np.flatnonzero(scores <= scores.min() * (1 + 1e-9) + 1e-12)
    assume(all(np.array_equal(Y[i], Y[near[0]]) for i in near))
    out = to_f64(A.krum(X, f, pre=(kind, params)))
    np.testing.assert_allclose(out, R.krum(Y, f), rtol=1e-10, atol=1e-10)
    if n > 2 and kind in ("nnm", "bucketing"):
        # the median start centers the Gram matrix near the data; from the zero start, data with a large
        # common component (the cases draw an offset of up to 30) loses the distance of a row close to z
        # to cancellation (~eps |x|^2 absolute in dist^2), far beyond these tolerances, by design of the
        # route (README: precision of an entry ~eps |x_i - c| |x_k - c|)
        out = to_f64(A.geometric_median(X, max_iter=5, tol=0.0, start="median", pre=(kind, params)))
        np.testing.assert_allclose(out, R.geometric_median(Y, max_iter=5, tol=0.0, start="median"), rtol=1e-9,
                                   atol=1e-9)


# ---- invariants -----------------------------------------------------------------------------------------------

def _zeros_like_row(X):
    return torch.zeros(X.shape[1], dtype=X.dtype) if isinstance(X, torch.Tensor) else np.zeros(X.shape[1], X.dtype)


RULES = {
    "krum": lambda X, f: A.krum(X, f),
    "multi_krum": lambda X, f: A.krum(X, f, m=3),
    "geometric_median": lambda X, f: A.geometric_median(X),
    "geometric_median_zero": lambda X, f: A.geometric_median(X, start="zero"),
    "centered_clipping": lambda X, f: A.centered_clipping(X, _zeros_like_row(X), 1.0, 3),
    "mda": lambda X, f: A.mda(X, f),
    "flag": lambda X, f: A.flag(X, r=2),
    "nnm": lambda X, f: A.nnm(X, f),
    "clip": lambda X, f: A.clip(X, 1.0),
    "arc": lambda X, f: A.arc(X, f),
    "krum_after_nnm": lambda X, f: A.krum(X, f, pre=("nnm", {"f": f})),
    "bulyan": lambda X, f: A.bulyan(X, (X.shape[0] - 3) // 4),
}


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("poison", ["nan", "inf", "-inf", "huge"])
def test_non_finite_workers_never_reach_the_result(rule, dtype, poison):
    rng = np.random.default_rng(11)
    n, f, d = 11, 3, 40
    values = rng.standard_normal((n, d)) + 2.0
    X = make(values, dtype, "torch")
    bad_value = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "huge": 3e38}[poison]
    for i in (1, 4, 9):
        X[i, ::3] = bad_value if not (dtype in ("float16", "bfloat16") and poison == "huge") else float("inf")
    out = RULES[rule](X, f)
    assert torch.isfinite(out).all(), (rule, dtype, poison)


def test_bucketing_non_finite_stays_in_its_buckets():
    X = np.random.default_rng(0).standard_normal((10, 8))
    X[[2, 7]] = np.inf
    out = A.bucketing(X, 2, seed=1)
    assert (~np.isfinite(out).all(axis=1)).sum() <= 2


@given(cases(n_min=5, n_max=20, dtypes=("float64",)), st.integers(0, 2**32 - 1))
def test_permutation_invariance(case, seed):
    values, dtype, framework, as_list = case
    n = len(values)
    f = (n - 3) // 2
    perm = np.random.default_rng(seed).permutation(n)
    for rule in (lambda X: A.krum(X, f, m=2), lambda X: A.geometric_median(X, max_iter=20),
                 lambda X: A.mda(X, min(f, 2)), lambda X: A.flag(X, r=1),
                 lambda X: A.centered_clipping(X, np.zeros(X.shape[1]), 1.0, 2)):
        np.testing.assert_allclose(rule(values[perm]), rule(values), rtol=1e-9, atol=1e-9)


@given(cases(n_min=5, n_max=20, dtypes=("float64",)), st.floats(-100, 100))
def test_translation_equivariance(case, shift):
    values, dtype, framework, as_list = case
    n = len(values)
    f = (n - 3) // 2
    moved = values + shift
    tol = 1e-8 * (1 + abs(shift))
    for rule in (lambda X: A.krum(X, f, m=2), lambda X: A.geometric_median(X, max_iter=20, tol=0.0),
                 lambda X: A.mda(X, min(f, 2)), lambda X: A.nnm(X, f)):
        np.testing.assert_allclose(rule(moved), rule(values) + shift, rtol=0, atol=tol)
    c = np.zeros(values.shape[1])
    np.testing.assert_allclose(A.centered_clipping(moved, c + shift, 1.0, 3),
                               A.centered_clipping(values, c, 1.0, 3) + shift, rtol=0, atol=tol)


def test_ties_and_duplicates_go_to_the_lower_index():
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    X = np.stack([base[0], base[1], base[1], base[0], base[0] + 100, base[1]])
    # rows 0 and 3 tie, 1, 2 and 5 tie: krum picks the lowest index among the lowest scores
    sel = A.krum(X, 1, m=2, reduce="none")
    ref_sel = R.krum_select(X.astype(np.float64), 1, 2)
    np.testing.assert_array_equal(sel, X[ref_sel])
    assert ref_sel == [1, 2]
    assert np.array_equal(A.nnm(X, 2), R.nnm(X.astype(np.float64), 2).astype(np.float32))
    all_same = np.ones((5, 3), np.float16)
    assert np.all(A.krum(all_same, 1) == 1) and np.all(A.mda(all_same, 2) == 1)


def test_n_from_1_to_100():
    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 7, 33, 64, 100):
        X = rng.standard_normal((n, 17)).astype(np.float32)
        G, _ = A.gram(X)
        assert G.shape == (n, n)
        if n >= 3:
            A.krum(X, (n - 3) // 2)
        A.nnm(X, 0)
        A.geometric_median(X, max_iter=3)


def test_list_and_stacked_inputs_agree_bitwise():
    X = np.random.default_rng(1).standard_normal((9, 1000)).astype(np.float32)
    rows = [X[i].copy() for i in range(9)]
    assert A.krum(X, 2, m=3).tobytes() == A.krum(rows, 2, m=3).tobytes()
    assert A.gram(X)[0].tobytes() == A.gram(rows)[0].tobytes()
    assert A.nnm(X, 2).tobytes() == A.nnm(rows, 2).tobytes()


def test_inputs_never_modified():
    X = np.random.default_rng(1).standard_normal((9, 50))
    X[3] = np.nan
    copy = X.copy()
    for rule in RULES.values():
        rule(X, 2)
    assert np.array_equal(X, copy, equal_nan=True)


# ---- bad inputs ---------------------------------------------------------------------------------------------

def test_bounds_name_the_violated_bound():
    X = np.zeros((6, 3))
    with pytest.raises(ValueError, match=r"krum: needs n >= 2f\+3, got n=6, f=2"):
        A.krum(X, 2)
    with pytest.raises(ValueError, match=r"bulyan: needs n >= 4f\+3, got n=6, f=1"):
        A.bulyan(X, 1)
    with pytest.raises(ValueError, match=r"mda: needs n > 2f"):
        A.mda(X, 3)
    with pytest.raises(ValueError, match=r"nnm: needs n > f"):
        A.nnm(X, 6)
    with pytest.raises(ValueError, match=r"arc: needs n > f"):
        A.arc(X, 6)
    with pytest.raises(ValueError, match=r"f: expected f >= 0"):
        A.krum(X, -1)
    with pytest.raises(TypeError, match=r"f: expected an int"):
        A.krum(X, 1.0)


def test_bad_arguments():
    X = np.zeros((7, 3), np.float32)
    with pytest.raises(ValueError, match="m:"):
        A.krum(X, 1, m=7)
    with pytest.raises(ValueError, match="neighbors"):
        A.krum(X, 1, neighbors="n-f")
    with pytest.raises(ValueError, match="reduce"):
        A.krum(X, 1, reduce="sum")
    with pytest.raises(ValueError, match="nu"):
        A.geometric_median(X, nu=0.0)
    with pytest.raises(ValueError, match="start"):
        A.geometric_median(X, start="mean")
    with pytest.raises(ValueError, match="start: expected shape"):
        A.geometric_median(X, start=np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="start: expected dtype"):
        A.geometric_median(X, start=np.zeros(3))
    with pytest.raises(ValueError, match="weights"):
        A.geometric_median(X, weights=[1.0] * 6)
    with pytest.raises(ValueError, match="tau"):
        A.centered_clipping(X, np.zeros(3, np.float32), -1.0)
    with pytest.raises(TypeError, match="center"):
        A.centered_clipping(X, torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="r:"):
        A.flag(X, r=8)
    with pytest.raises(ValueError, match="s:"):
        A.bucketing(X, 0)
    with pytest.raises(ValueError, match="c:"):
        A.clip(X, -1.0)
    with pytest.raises(ValueError, match="W:"):
        A.combine(X, np.ones((2, 6)))
    with pytest.raises(ValueError, match="W:"):
        A.combine(X, [[np.nan] * 7])
    with pytest.raises(ValueError, match="pre:"):
        A.krum(X, 1, pre=("median", {}))
    with pytest.raises(ValueError, match="pre:"):
        A.krum(X, 1, pre=("nnm", {}))
    with pytest.raises(ValueError, match="C-contiguous"):
        A.krum(np.zeros((7, 6), np.float32)[:, ::2], 1)
    with pytest.raises(TypeError):
        A.krum(np.zeros((7, 3), np.int32), 1)


def test_mda_refuses_searches_past_its_limit(monkeypatch):
    from commkernels.aggregate import _gram_rules

    monkeypatch.setattr(_gram_rules, "MDA_MAX_NODES", 50)
    X = np.random.default_rng(0).standard_normal((20, 4))
    with pytest.raises(ValueError, match="mda: the exact search exceeded 50 nodes"):
        A.mda(X, 8)


# ---- torch ------------------------------------------------------------------------------------------------

def test_torch_ops_opcheck():
    X = torch.randn(9, 12)
    for op, args in ((torch.ops.commkernels.krum, (2, 2, "n-f-2", "mean", "")),
                     (torch.ops.commkernels.nnm, (2,)),
                     (torch.ops.commkernels.flag, (1, 0.0, 1, 1e-7)),
                     (torch.ops.commkernels.combine, ([0.5] * 9 + [0.0] * 9, 2)),
                     (torch.ops.commkernels.centered_clipping, (torch.zeros(12), 1.0, 2))):
        torch.library.opcheck(op, ([X], True) + args, test_utils=("test_schema", "test_faketensor"))


def test_torch_results_match_numpy(device):
    X = torch.randn(9, 33, device=device)
    Xn = X.cpu().numpy()
    assert np.array_equal(A.krum(X, 2, m=3).cpu().numpy(), A.krum(Xn, 2, m=3))
    np.testing.assert_allclose(A.geometric_median(X).cpu().numpy(), A.geometric_median(Xn), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(A.nnm(X, 2).cpu().numpy(), A.nnm(Xn, 2), rtol=1e-5, atol=1e-6)
    G, norms = A.gram(X)
    assert G.dtype == torch.float64 and G.device == X.device
    Gn, _ = A.gram(Xn)
    np.testing.assert_allclose(G.cpu().numpy(), Gn, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gram_non_finite_rows_stay_in_their_row(dtype):
    rng = np.random.default_rng(2)
    values = rng.standard_normal((6, 100)) + 3.0
    X = make(values, dtype, "torch")
    X[2, 7] = float("nan")  # in the first 64 coordinates (the kernel's vector path) ...
    X[4, 0] = float("inf")
    X[1, 90] = -float("inf")  # ... and past them (its coordinate-at-a-time tail)
    G = to_f64(A.gram(X)[0])
    bad = np.array([False, True, True, False, True, False])
    assert np.array_equal(host.bad_rows(G), bad)
    good = ~bad
    Xr = rounded(values, dtype)
    Xr[2, 7], Xr[4, 0], Xr[1, 90] = np.nan, np.inf, -np.inf
    Gr, _ = R.gram(Xr)  # the finite-entry mean skips the bad entries, as the kernel's center does
    sub, ref = G[np.ix_(good, good)], Gr[np.ix_(good, good)]
    scale = np.sqrt(np.diag(ref)) + np.sqrt(np.sum(Xr[good] ** 2, axis=1))
    assert np.all(np.abs(sub - ref) <= gamma(dtype) * np.outer(scale, scale))


def test_with_pre_for_coordinate_rules_and_gram_rules():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((9, 30))
    X[4] = np.nan
    Y = A.nnm(X, 2)
    np.testing.assert_array_equal(A.with_pre(A.trimmed_mean, X, 2, pre=("nnm", {"f": 2})), A.trimmed_mean(Y, 2))
    np.testing.assert_allclose(A.with_pre(A.krum, X, 2, pre=("nnm", {"f": 2})), R.krum(R.nnm(X, 2), 2),
                               rtol=1e-12, atol=1e-12)
    assert np.isfinite(A.with_pre(A.median, X, pre=("clip", {"c": 1.0}))).all()


def test_torch_compile_fullgraph():
    X = torch.randn(9, 16)
    # aot_eager: the whole graph is captured (fullgraph) and traced with the fake impls, without codegen
    compiled = torch.compile(lambda X: A.krum(X, 2, m=2) * 2 + A.nnm(X, 2).sum(0), fullgraph=True,
                             backend="aot_eager")
    torch.testing.assert_close(compiled(X), A.krum(X, 2, m=2) * 2 + A.nnm(X, 2).sum(0))


def test_combine_gradcheck():
    W = [[0.5, -1.0, 0.0, 2.0], [0.0, 0.25, 1.0, 0.0]]
    X = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda X: A.combine(X, W), (X,))
    rows = [torch.randn(3, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    assert torch.autograd.gradcheck(lambda *rows: A.combine(list(rows), W), tuple(rows))
    torch.library.opcheck(torch.ops.commkernels.combine, ([X], True, sum(W, []), 2))
