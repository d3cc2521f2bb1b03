"""commkernels.aggregate: the input layer, mean, and the coordinate-wise rules (median, trimmed_mean, meamed,
phocas, the nearest-median mean) against the NumPy float64 references, plus invariants and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import commkernels
from commkernels import aggregate as agg
from commkernels.aggregate import _coord
from commkernels.reference import aggregate as ref

DTYPES = ("float32", "float64", "float16", "bfloat16")
TORCH_DTYPE = {d: getattr(torch, d) for d in DTYPES}
# unit roundoff of the storage type and of the accumulation type
UNIT = {"float32": 2.0**-24, "float64": 2.0**-53, "float16": 2.0**-11, "bfloat16": 2.0**-8}
ACC_UNIT = {"float32": 2.0**-24, "float64": 2.0**-53, "float16": 2.0**-24, "bfloat16": 2.0**-24}
# half the spacing of the subnormals: the absolute rounding error where u |x| no longer bounds it
HALF_TINY = {"float32": 2.0**-150, "float64": 2.0**-1075, "float16": 2.0**-25, "bfloat16": 2.0**-134}
RULES = ("median", "trimmed_mean", "meamed", "phocas")


def f64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().to(torch.float64).numpy()
    return np.asarray(a).astype(np.float64)


def make(values: np.ndarray, dtype: str, framework: str):
    t = torch.from_numpy(np.ascontiguousarray(values)).to(TORCH_DTYPE[dtype])
    return t if framework == "torch" else t.numpy()


def bits(a) -> bytes:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        return a.view(torch.int16).numpy().tobytes() if a.dtype == torch.bfloat16 else a.numpy().tobytes()
    return np.asarray(a).tobytes()


@st.composite
def updates(draw, min_n=1, max_n=100, nonfinite=0):
    """(X as the framework's (n, d) array, the float64 values that X holds, dtype, framework)."""
    dtype = draw(st.sampled_from(DTYPES))
    framework = "torch" if dtype == "bfloat16" else draw(st.sampled_from(["numpy", "torch"]))
    n = draw(st.one_of(st.integers(min_n, min(max_n, 12)), st.integers(min_n, max_n)))
    d = draw(st.one_of(st.integers(0, 70), st.integers(1, 300)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "ties", "duplicates"]))
    if kind == "normal":
        values = rng.standard_normal((n, d)) * 10.0 ** rng.integers(-2, 3)
    elif kind == "ties":
        values = rng.integers(-3, 4, (n, d)) * 0.5
    else:  # a few distinct workers, each repeated
        distinct = rng.standard_normal((max(1, n // 3), d))
        values = distinct[rng.integers(0, distinct.shape[0], n)]
    bad = draw(st.integers(0, min(nonfinite, n)))
    for i in rng.choice(n, bad, replace=False):
        values[i] = rng.choice([np.nan, np.inf, -np.inf], d)
    X = make(values, dtype, framework)
    return X, f64(X), dtype, framework


def as_input(X, form: str):
    if form == "stacked":
        return X
    return list(X) if form == "list" else tuple(X)


def exact_or_rounded(got, want, dtype):
    """got is want rounded once to dtype (|got - want| <= u |want|, or half the subnormal spacing; NaN where
    want is NaN)."""
    got = f64(got)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[~finite & ~np.isnan(want)], want[~finite & ~np.isnan(want)])
    tol = UNIT[dtype] * np.abs(want[finite]) + HALF_TINY[dtype]
    assert np.all(np.abs(got[finite] - want[finite]) <= tol), np.max(np.abs(got[finite] - want[finite]) - tol)


def summed_close(got, want, dtype, mags, m):
    """got = (a sum of m values of magnitudes summing to mags, in the accumulation type) / m, rounded to
    dtype: |error| <= (m - 1) u_acc mags / m (the sum) + u_acc |want| (the division) + u |want| (rounding,
    plus half the subnormal spacing of dtype for subnormal results)."""
    got = f64(got)
    u, ua = UNIT[dtype], ACC_UNIT[dtype]
    tol = (m - 1) * ua * 1.01 * mags / m + ua * np.abs(want) + u * np.abs(want) + HALF_TINY[dtype]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[~finite], want[~finite])
    excess = np.abs(got[finite] - want[finite]) - tol[finite]
    assert np.all(excess <= 0), (np.max(excess), np.argmax(excess))


def middle_magnitude(V, f):
    S = np.sort(V, axis=0)
    return np.abs(S[f:V.shape[0] - f]).sum(axis=0)


# ---- the input layer ----------------------------------------------------------------------------------


def test_updates_describes_stacked_and_list_inputs():
    X = np.arange(24, dtype=np.float32).reshape(4, 3, 2)
    u = agg.updates(X)
    assert (u.n, u.shape, u.d, u.dtype, u.framework, u.stacked) == (4, (3, 2), 6, "float32", "numpy", True)
    assert u.parts[0] is X
    rows = list(X)
    v = agg.updates(rows)
    assert (v.n, v.shape, v.d, v.stacked) == (4, (3, 2), 6, False)
    assert all(p is r for p, r in zip(v.parts, rows))  # no copies
    w = u.subset([2, 0, 2])
    assert w.n == 3 and np.shares_memory(w.parts[0], X)
    np.testing.assert_array_equal(agg.mean(w.parts), (X[2] * 2 + X[0]) / 3)


def test_bad_inputs():
    x = np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match=r"X: expected at least one update, got an empty list"):
        agg.median([])
    with pytest.raises(ValueError, match=r"X: expected at least one update"):
        agg.median(np.ones((0, 3), np.float32))
    with pytest.raises(ValueError, match=r"X\[1\]: expected shape \(5,\)"):
        agg.median([x[0], np.ones(4, np.float32)])
    with pytest.raises(TypeError, match=r"X\[1\]: expected dtype float32"):
        agg.median([x[0], np.ones(5, np.float64)])
    with pytest.raises(TypeError, match=r"X\[1\]: expected a numpy array"):
        agg.median([x[0], torch.ones(5)])
    with pytest.raises(ValueError, match=r"X\[0\]: expected a C-contiguous array"):
        agg.median([np.ones((5, 2), np.float32)[:, 0], x[0]])
    with pytest.raises(ValueError, match=r"X: expected a C-contiguous array"):
        agg.median(np.ones((5, 4), np.float32).T)
    with pytest.raises(TypeError, match=r"X: expected dtype float32"):
        agg.median(np.ones((3, 2), np.int32))
    with pytest.raises(TypeError, match=r"X: expected a NumPy array"):
        agg.median("abc")
    with pytest.raises(ValueError, match=r"X: .*0-d"):
        agg.median(np.ones((), np.float32))
    with pytest.raises(ValueError, match="even"):
        agg.median(x, even="middle")
    with pytest.raises(ValueError, match=r"trimmed_mean: needs n > 2f, got n=4, f=2"):
        agg.trimmed_mean(x, 2)
    with pytest.raises(ValueError, match=r"meamed: needs n > 2f, got n=4, f=2"):
        agg.meamed(x, 2)
    with pytest.raises(ValueError, match=r"phocas: needs n > 2f, got n=4, f=3"):
        agg.phocas(list(x), 3)
    with pytest.raises(ValueError, match="f: expected f >= 0"):
        agg.trimmed_mean(x, -1)
    with pytest.raises(TypeError, match="f: expected an int"):
        agg.trimmed_mean(x, 1.0)
    with pytest.raises(ValueError, match="fraction"):
        agg.trimmed_mean(x, fraction=0.5)
    with pytest.raises(ValueError, match="f, fraction"):
        agg.trimmed_mean(x, 1, fraction=0.1)
    with pytest.raises(TypeError, match="missing f"):
        agg.trimmed_mean(x)
    with pytest.raises(ValueError, match="weights: expected 4 weights"):
        agg.mean(x, [1, 2])
    with pytest.raises(ValueError, match="weights: expected finite values >= 0"):
        agg.mean(x, [1, -1, 1, 1])
    with pytest.raises(ValueError, match="weights: expected a positive sum"):
        agg.mean(x, [0, 0, 0, 0])
    with pytest.raises(TypeError, match="weights"):
        agg.mean(x, ["a", 1, 1, 1])
    with pytest.raises(ValueError, match="beta"):
        _coord._nearest_median_mean(agg.updates(x), 2)


# ---- mean -------------------------------------------------------------------------------------------


@given(updates(), st.sampled_from(["stacked", "list", "tuple"]), st.booleans(), st.data())
def test_mean_matches_reference(case, form, weighted, data):
    X, V, dtype, framework = case
    n = V.shape[0]
    weights = None
    if weighted:
        weights = data.draw(st.lists(st.integers(0, 5), min_size=n, max_size=n).filter(lambda w: sum(w) > 0))
    got = agg.mean(as_input(X, form), weights)
    assert type(got) is type(X) and str(got.dtype) == str(X.dtype) and tuple(got.shape) == tuple(X.shape[1:])
    want = ref.mean(V, weights)
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    mags = (w[:, None] * np.abs(V)).sum(axis=0) / w.sum() * n if V.size else np.zeros(V.shape[1])
    with np.errstate(invalid="ignore"):
        summed_close(got, want, dtype, np.nan_to_num(mags, nan=np.inf), n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_mean_adds_rounded_products_in_worker_order(dtype):
    """The documented order, bit for bit: acc = w_0 x_0, then acc += w_i x_i for i = 1.., each product and
    each sum rounded in the accumulation type, then acc / sum(w). Written with whole-tensor torch ops, which
    never fuse a product into the sum; the CUDA kernel computes exactly this (__fmul_rn), so a CPU build
    that fuses them (an FMA in AVX-512 code) gives other bits than the GPU. Failed before the fix there."""
    acc_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    gen = torch.Generator().manual_seed(3)
    for n in (1, 3, 9, 23):  # 9 and 23: the CPU kernel's eight-row sweeps and its tail
        X = torch.randn(n, 4099, generator=gen).to(dtype)
        weights = (torch.rand(n, generator=gen, dtype=torch.float64) * 3).tolist()
        w = torch.tensor(weights, dtype=acc_dtype)
        total = torch.zeros((), dtype=acc_dtype)
        for wi in w:
            total = total + wi
        acc = w[0] * X[0].to(acc_dtype)
        for i in range(1, n):
            acc = acc + w[i] * X[i].to(acc_dtype)
        assert bits(agg.mean(X, weights)) == bits((acc / total).to(dtype)), n


# ---- the coordinate-wise rules against the references -----------------------------------------------


def run(rule, X, f, even="mean"):
    if rule == "median":
        return agg.median(X, even=even)
    return getattr(agg, rule)(X, f)


@given(updates(nonfinite=0), st.sampled_from(["stacked", "list"]), st.sampled_from(["mean", "lower", "upper"]))
def test_median_matches_reference(case, form, even):
    X, V, dtype, framework = case
    got = agg.median(as_input(X, form), even=even)
    assert type(got) is type(X) and str(got.dtype) == str(X.dtype) and tuple(got.shape) == tuple(X.shape[1:])
    want = ref.median(V, even)
    if V.shape[0] % 2 or even != "mean":  # an input value, bit for bit
        np.testing.assert_array_equal(f64(got), want)
    else:
        exact_or_rounded(got, want, dtype)


@given(updates(), st.sampled_from(["stacked", "list"]), st.sampled_from(["trimmed_mean", "meamed", "phocas"]), st.data())
def test_trimming_rules_match_reference(case, form, rule, data):
    X, V, dtype, framework = case
    n = V.shape[0]
    f = data.draw(st.integers(0, (n - 1) // 2))
    got = run(rule, as_input(X, form), f)
    assert type(got) is type(X) and str(got.dtype) == str(X.dtype)
    want = getattr(ref, rule)(V, f) if V.shape[1] else np.zeros(0)
    m = n - 2 * f if rule == "trimmed_mean" else n - f
    if rule == "phocas" and dtype != "float64" and V.shape[1]:
        # The center (the trimmed mean) is computed in float32, the reference's in float64: a column whose
        # (n-f)-th and (n-f+1)-th nearest values are closer in distance than the centers can differ may
        # select differently. Those columns are compared against the float32-center reference instead.
        center = ref.trimmed_mean(V, f)
        err = (n - 2 * f) * ACC_UNIT[dtype] * middle_magnitude(V, f) / (n - 2 * f) + ACC_UNIT[dtype] * np.abs(center)
        dist = np.sort(np.abs(V - center), axis=0)
        if f:
            ambiguous = dist[n - f] - dist[n - f - 1] <= 2 * err
            keep = ~ambiguous
            got, want = f64(got)[keep], want[keep]
            V = V[:, keep]
    mags = np.abs(V).sum(axis=0) if rule != "trimmed_mean" else middle_magnitude(V, f)
    summed_close(got, want, dtype, mags * (m / max(m, 1)), m)


@given(st.integers(1, 5), st.integers(257, 300), st.sampled_from(RULES))
def test_many_workers_fallback(d, n, rule):
    V = np.random.default_rng(n * d).standard_normal((n, d))
    X = V.astype(np.float32)
    f = n // 4
    got = run(rule, X, f)
    want = ref.median(X.astype(np.float64)) if rule == "median" else getattr(ref, rule)(X.astype(np.float64), f)
    np.testing.assert_allclose(got, want, rtol=n * 2**-24, atol=n * 2**-24)
    assert bits(got) == bits(run(rule, list(X), f))


def test_nearest_median_mean_is_bulyans_second_stage():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((11, 333)).astype(np.float32)
    u = agg.updates(X)
    chosen = [0, 2, 3, 5, 6, 7, 9]
    got = _coord._nearest_median_mean(u.subset(chosen), 5)
    want = ref.nearest_median_mean(X[chosen].astype(np.float64), 5)
    summed_close(got, want, "float32", np.abs(X[chosen]).sum(axis=0).astype(np.float64), 5)
    assert bits(got) == bits(agg.meamed(X[chosen], 2))
    t = torch.from_numpy(X)
    assert bits(_coord._nearest_median_mean(agg.updates(t).subset(chosen), 5)) == bits(got)


def test_known_values():
    X = np.array([[1, 5, -2], [3, 1, 0], [2, 9, 7], [100, 2, 1]], np.float64)
    np.testing.assert_array_equal(agg.median(X), [2.5, 3.5, 0.5])
    np.testing.assert_array_equal(agg.median(X, even="lower"), [2, 2, 0])
    np.testing.assert_array_equal(agg.median(X, even="upper"), [3, 5, 1])
    np.testing.assert_array_equal(agg.trimmed_mean(X, 1), [2.5, 3.5, 0.5])
    np.testing.assert_array_equal(agg.trimmed_mean(X, fraction=0.25), [2.5, 3.5, 0.5])
    # meamed, f = 1: drop the value farthest from the median 2.5 / 3.5 / 0.5
    np.testing.assert_array_equal(agg.meamed(X, 1), [2, 8 / 3, -1 / 3])
    # ties in distance keep the larger value: median 0, values -1 and 1 equally far
    Y = np.array([[-1.0], [0.0], [1.0]])
    np.testing.assert_array_equal(agg.meamed(Y, 1), [0.5])
    np.testing.assert_array_equal(agg.phocas(Y, 1), [0.5])
    np.testing.assert_array_equal(agg.median(np.array([[np.nan], [1.0], [np.inf]])), [np.inf])


# ---- invariants -------------------------------------------------------------------------------------------


@given(updates(max_n=40), st.sampled_from(RULES), st.data())
def test_permutation_invariance(case, rule, data):
    X, V, dtype, framework = case
    n = V.shape[0]
    f = data.draw(st.integers(0, (n - 1) // 2))
    perm = data.draw(st.permutations(range(n)))
    rows = list(X)
    assert bits(run(rule, X, f)) == bits(run(rule, [rows[i] for i in perm], f))


@given(st.integers(1, 40), st.integers(1, 100), st.sampled_from(RULES), st.sampled_from(["float32", "float64", "bfloat16"]),
       st.integers(-8, 8), st.integers(-3, 3), st.data())
def test_translation_and_scale_equivariance(n, d, rule, dtype, shift, power, data):
    # Multiples of 1/2 and shifts by multiples of 1/2, scales by powers of two: every sum is exact, so
    # F(X + c) = F(X) + c and F(a X) = a F(X) hold up to the final division's rounding.
    f = data.draw(st.integers(0, (n - 1) // 2))
    V = np.random.default_rng(n * 1000 + d).integers(-6, 7, (n, d)) * 0.5
    X = make(V, dtype, "torch")
    c = shift * 0.5
    base = f64(run(rule, X, f))
    shifted = f64(run(rule, make(V + c, dtype, "torch"), f))
    scaled = f64(run(rule, make(V * 2.0**power, dtype, "torch"), f))
    m = {"median": 2, "trimmed_mean": n - 2 * f}.get(rule, n - f)
    tol = UNIT[dtype] * (np.abs(base) + abs(c)) * 2
    assert np.all(np.abs(shifted - (base + c)) <= tol)
    np.testing.assert_array_equal(scaled, base * 2.0**power)
    if rule in ("median", "trimmed_mean"):  # symmetric rules: F(-X) = -F(X)
        np.testing.assert_array_equal(f64(run(rule, make(-V, dtype, "torch"), f)), -base)
    del m


@given(updates(min_n=3, max_n=60), st.sampled_from(["median", "trimmed_mean"]), st.data())
def test_inside_honest_hull(case, rule, data):
    X, V, dtype, framework = case
    n = V.shape[0]
    f = data.draw(st.integers(1, (n - 1) // 2))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    byzantine = rng.choice(n, data.draw(st.integers(0, f)), replace=False)
    W = V.copy()
    W[byzantine] = rng.choice([1e4, -1e4, np.inf, -np.inf, np.nan], (len(byzantine), V.shape[1]))
    W = f64(make(W, dtype, framework))  # as the dtype holds it
    honest = np.delete(W, byzantine, axis=0)
    got = f64(run(rule, make(W, dtype, framework), f))
    lo, hi = honest.min(axis=0), honest.max(axis=0)
    slack = UNIT[dtype] * np.maximum(np.abs(lo), np.abs(hi)) * (n + 2)
    assert np.all(np.isfinite(got))
    assert np.all(got >= lo - slack) and np.all(got <= hi + slack)


@given(updates(min_n=1, max_n=60, nonfinite=0), st.sampled_from(RULES), st.data())
def test_up_to_f_nonfinite_workers_give_a_finite_result(case, rule, data):
    X, V, dtype, framework = case
    n = V.shape[0]
    f = data.draw(st.integers(0, (n - 1) // 2))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    W = np.clip(V, -1e3, 1e3)
    bad = rng.choice(n, f, replace=False)
    W[bad] = rng.choice([np.nan, np.inf, -np.inf], (f, V.shape[1]))  # entire rows, mixed kinds
    got = f64(run(rule, make(W, dtype, framework), f))
    assert np.all(np.isfinite(got)), (rule, n, f)
    if rule == "median":  # finite while at most (n - 1) // 2 workers are not
        assert np.all(np.isfinite(f64(agg.median(make(W, dtype, framework), even="lower"))))


@given(updates(max_n=64, nonfinite=2), st.sampled_from(RULES + ("mean",)), st.data())
def test_stacked_and_list_agree_and_inputs_unmodified(case, rule, data):
    X, V, dtype, framework = case
    n = V.shape[0]
    f = data.draw(st.integers(0, (n - 1) // 2))
    before = bits(X)
    a = agg.mean(X) if rule == "mean" else run(rule, X, f)
    b = agg.mean(list(X)) if rule == "mean" else run(rule, list(X), f)
    assert bits(a) == bits(b)
    assert bits(X) == before


def test_deterministic_whatever_the_thread_count():
    X = torch.randn(33, 200_003)
    X[3, ::7] = float("nan")
    before, results = commkernels.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            commkernels.set_num_threads(threads)
            results.append([bits(run(r, X, 5)) for r in RULES] + [bits(agg.mean(X, list(range(33))))])
    finally:
        commkernels.set_num_threads(before)
    assert results[0] == results[1] == results[2]


def test_avx512_and_baseline_paths_agree(run_python):
    # the baseline loops run where AVX-512 is absent: run them in a child process with it disabled
    code = ("import numpy as np; from commkernels import aggregate as a; "
            "X = np.random.default_rng(7).standard_normal((21, 4099)).astype(np.float32); X[2, ::5] = np.inf; "
            "print(b''.join(np.ascontiguousarray(r).tobytes() for r in "
            "[a.median(X), a.trimmed_mean(X, 4), a.meamed(X, 4), a.phocas(X, 4), a.mean(X)]).hex())")
    X = np.random.default_rng(7).standard_normal((21, 4099)).astype(np.float32)
    X[2, ::5] = np.inf
    here = b"".join(np.ascontiguousarray(r).tobytes() for r in
                    [agg.median(X), agg.trimmed_mean(X, 4), agg.meamed(X, 4), agg.phocas(X, 4), agg.mean(X)])
    assert run_python(code, avx512=False).strip() == here.hex()


# ---- torch ------------------------------------------------------------------------------------------------


def test_torch_opcheck_and_compile(device):
    for dtype in (torch.float32, torch.bfloat16):  # the dtypes only change the kernel's template
        X = torch.randn(7, 5, 3, dtype=dtype, device=device)
        rows = list(X)
        for stacked, parts in ((True, [X]), (False, rows)):
            torch.library.opcheck(torch.ops.commkernels.median.default, (parts, stacked, "mean"))
            torch.library.opcheck(torch.ops.commkernels.trimmed_mean.default, (parts, stacked, 2))
            torch.library.opcheck(torch.ops.commkernels.meamed.default, (parts, stacked, 2))
            torch.library.opcheck(torch.ops.commkernels.phocas.default, (parts, stacked, 2))
            torch.library.opcheck(torch.ops.commkernels.mean.default, (parts, stacked, [1.0, 2, 3, 4, 5, 6, 7]))
    torch._dynamo.reset()
    fn = torch.compile(lambda t: agg.trimmed_mean(t, 2) + agg.median(t), fullgraph=True, backend="aot_eager")
    X = torch.randn(9, 100, device=device)
    torch.testing.assert_close(fn(X), agg.trimmed_mean(X, 2) + agg.median(X))


def test_mean_gradient():
    X = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: agg.mean(t, [1.0, 2.0, 0.0, 3.0]), (X,))
    rows = [torch.randn(6, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    torch.autograd.gradcheck(lambda *r: agg.mean(list(r), [1.0, 2.0, 3.0]), tuple(rows))


def test_median_and_trimmed_mean_gradients():
    X = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    for even in ("mean", "lower", "upper"):
        torch.autograd.gradcheck(lambda t: agg.median(t, even=even), (X,))
    torch.autograd.gradcheck(lambda t: agg.trimmed_mean(t, 2), (X,))
    rows = [torch.randn(5, dtype=torch.float64, requires_grad=True) for _ in range(7)]
    torch.autograd.gradcheck(lambda *r: agg.median(list(r)), tuple(rows))
    torch.autograd.gradcheck(lambda *r: agg.trimmed_mean(list(r), 3), tuple(rows))
    # ties: the gradient goes to the lower worker index among equal values
    T = torch.tensor([[2.0], [1.0], [2.0], [2.0]], requires_grad=True)
    agg.median(T).sum().backward()  # ranks 1 and 2 are workers 0 and 2
    torch.testing.assert_close(T.grad, torch.tensor([[0.5], [0.0], [0.5], [0.0]]))


def bits_but_nan_payload(a: torch.Tensor) -> bytes:
    """bits(a) with every NaN written as one NaN. IEEE 754 leaves the payload of a computed NaN open: x86
    keeps an operand's (0x7fc00000 for torch's nan), a GPU writes 0x7fffffff; where the NaNs are is compared
    bit for bit."""
    a = a.detach().cpu()
    return bits(torch.where(a.isnan(), torch.tensor(float("nan"), dtype=a.dtype), a))


def test_cuda_matches_cpu(device):
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        X = torch.randn(23, 3001, dtype=dtype)
        X[1, ::3] = float("nan")
        X[4, ::5] = float("inf")
        G = X.to(device)
        for rule in RULES:
            got = run(rule, G, 5)
            assert got.device.type == device
            assert bits(got) == bits(run(rule, X, 5)), (rule, dtype)
            assert bits(run(rule, list(G), 5)) == bits(got)
        assert bits(agg.median(G, even="upper")) == bits(agg.median(X, even="upper"))
        got = agg.mean(list(G), list(range(23)))  # row 1 is NaN where weighted: the sum computes a NaN
        assert bits_but_nan_payload(got) == bits_but_nan_payload(agg.mean(X, list(range(23))))


def test_jax():
    jax = pytest.importorskip("jax")
    X = np.random.default_rng(3).standard_normal((9, 50)).astype(np.float32)
    got = agg.trimmed_mean(jax.numpy.asarray(X), 2)
    assert isinstance(got, jax.Array)
    np.testing.assert_array_equal(np.asarray(got), agg.trimmed_mean(X, 2))
    np.testing.assert_array_equal(np.asarray(agg.median([jax.numpy.asarray(r) for r in X])), agg.median(X))


def test_byzfl_parity():
    from commkernels.bench.aggregate_coord import byzfl_aggregators

    byzfl = byzfl_aggregators()
    if byzfl is None:
        pytest.skip("ByzFL is not installed")
    for n in (9, 10):  # ByzFL computes in float32
        X = torch.randn(n, 501, generator=torch.Generator().manual_seed(n))
        atol = n * 2.0**-24 * float(X.abs().max())  # two float32 sums of at most n terms, in any order
        torch.testing.assert_close(agg.median(X), byzfl.Median()(X), rtol=0, atol=2.0**-24 * float(X.abs().max()))
        torch.testing.assert_close(agg.trimmed_mean(X, 3), byzfl.TrMean(f=3)(X), rtol=0, atol=atol)
        torch.testing.assert_close(agg.meamed(X, 3), byzfl.Meamed(f=3)(X), rtol=0, atol=atol)
