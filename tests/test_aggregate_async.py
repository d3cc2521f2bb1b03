"""Asynchronous averaging (staleness_weight, buffer_add_, fedasync_mix_, variance_corrected_mean) against the
NumPy float64 references, with error bounds derived from the arithmetic, invariants and bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import commkernels
from commkernels import aggregate
from commkernels.aggregate import _async
from commkernels.aggregate._async import _vcm_op
from commkernels.reference import aggregate_async as ref

DTYPES = ("float32", "float64", "float16", "bfloat16")
# unit roundoff of each storage type (half an ulp, relative) and of its accumulation type
UNIT = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}
ACC = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-24, "bfloat16": 2.0**-24}
TINY = {"float64": 5e-324, "float32": 1.5e-45, "float16": 6e-8, "bfloat16": 1e-40}  # smallest subnormal


def to64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().to(torch.float64).numpy().copy()
    return np.array(a, dtype=np.float64)


def make(values: np.ndarray, dtype: str, framework: str):
    t = torch.from_numpy(np.ascontiguousarray(values)).to(getattr(torch, dtype))
    return t.numpy() if framework == "numpy" else t


def pick_framework(draw, dtype: str) -> str:
    return "torch" if dtype == "bfloat16" else draw(st.sampled_from(["numpy", "torch"]))


# ---- staleness ------------------------------------------------------------------------------------------------

@given(st.lists(st.floats(0, 1e6), min_size=0, max_size=20), st.sampled_from(_async.STALENESS_KINDS),
       st.one_of(st.none(), st.floats(0, 20)), st.one_of(st.none(), st.floats(0, 50)),
       st.sampled_from(["numpy", "torch", "scalar"]))
def test_staleness_weight_matches_reference(taus, kind, a, b, framework):
    want = ref.staleness_weight(np.array(taus), kind, a, b)
    if framework == "scalar":
        got = np.array([aggregate.staleness_weight(t, kind, a, b) for t in taus])
        np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)
        return
    x = np.array(taus, np.float64)
    x = torch.from_numpy(x) if framework == "torch" else x
    got = aggregate.staleness_weight(x, kind, a, b)
    assert type(got) is type(x) and str(got.dtype) == str(x.dtype) and tuple(got.shape) == tuple(x.shape)
    np.testing.assert_allclose(to64(got), want, rtol=1e-15, atol=0)
    assert np.all((want > 0) & (want <= 1))


def test_staleness_weight_known_values_and_dtypes():
    assert aggregate.staleness_weight(3, "polynomial") == pytest.approx(0.5)  # 1/sqrt(1 + 3)
    assert aggregate.staleness_weight(4, "hinge") == 1.0
    assert aggregate.staleness_weight(6, "hinge", a=0.5, b=4) == pytest.approx(0.5)
    assert aggregate.staleness_weight(100, "constant") == 1.0
    ints = aggregate.staleness_weight(np.arange(5), "polynomial", a=1.0)
    assert ints.dtype == np.float64
    np.testing.assert_allclose(ints, 1.0 / (1.0 + np.arange(5)))
    f32 = aggregate.staleness_weight(torch.arange(5, dtype=torch.float32), "hinge")
    assert f32.dtype == torch.float32


def test_staleness_weight_bad_inputs():
    with pytest.raises(ValueError, match="kind"):
        aggregate.staleness_weight(1, "exponential")
    with pytest.raises(ValueError, match="tau"):
        aggregate.staleness_weight(-1, "polynomial")
    with pytest.raises(ValueError, match="tau"):
        aggregate.staleness_weight(np.array([1.0, np.nan]), "hinge")
    with pytest.raises(ValueError, match="a:"):
        aggregate.staleness_weight(1, "polynomial", a=-1)
    with pytest.raises(TypeError, match="tau"):
        aggregate.staleness_weight(True)
    with pytest.raises(TypeError, match="tau"):
        aggregate.staleness_weight(np.array([True]))


# ---- buffer_add_ and fedasync_mix_ --------------------------------------------------------------------------

@st.composite
def pairs(draw):
    sdt = draw(st.sampled_from(DTYPES))
    tdt = draw(st.sampled_from(["float32", sdt])) if sdt != "float64" else "float64"
    framework = "torch" if "bfloat16" in (sdt, tdt) else draw(st.sampled_from(["numpy", "torch"]))
    n = draw(st.one_of(st.integers(0, 40), st.integers(0, 300_000)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    target = make(rng.standard_normal(n) * scale, tdt, framework)
    source = make(rng.standard_normal(n) * scale, sdt, framework)
    return target, source, tdt


def bound(dtype: str, want: np.ndarray, magnitude: np.ndarray, ops: int) -> np.ndarray:
    """The final rounding to dtype, plus `ops` roundings in the accumulation type of the terms' magnitude."""
    return UNIT[dtype] * np.abs(want) + ops * ACC[dtype] * magnitude + TINY[dtype]


@given(pairs(), st.floats(-4, 4))
def test_buffer_add_matches_reference(case, weight):
    buffer, update, dtype = case
    before, u = to64(buffer), to64(update)
    out = aggregate.buffer_add_(buffer, update, weight)
    assert out is buffer
    want = ref.buffer_add(before, u, weight)
    err = np.abs(to64(buffer) - want)
    # w rounded to the accumulation type, the product, the sum: 3 roundings of |b| + |w u|
    assert np.all(err <= bound(dtype, want, np.abs(before) + np.abs(weight * u), 3))
    np.testing.assert_array_equal(to64(update), u)  # the update is not modified


@given(pairs(), st.floats(0, 1))
def test_fedasync_mix_matches_reference(case, alpha):
    x, x_new, dtype = case
    before, u = to64(x), to64(x_new)
    assert aggregate.fedasync_mix_(x, x_new, alpha) is x
    want = ref.fedasync_mix(before, u, alpha)
    # alpha and 1 - alpha rounded, two products, one sum: 5 roundings of |x| + |x_new|
    assert np.all(np.abs(to64(x) - want) <= bound(dtype, want, np.abs(before) + np.abs(u), 5))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fedasync_mix_endpoints_are_exact(dtype):
    rng = np.random.default_rng(0)
    x, x_new = make(rng.standard_normal(1000), dtype, "torch"), make(rng.standard_normal(1000), dtype, "torch")
    keep = x.clone()
    aggregate.fedasync_mix_(x, x_new, 0.0)
    assert torch.equal(x, keep)
    aggregate.fedasync_mix_(x, x_new, 1.0)
    assert torch.equal(x, x_new)


def test_buffer_add_fp32_buffer_of_bf16_updates_accumulates_in_fp32():
    buffer = torch.zeros(1000)
    update = torch.full((1000,), 1.0 + 2**-7, dtype=torch.bfloat16)
    for _ in range(300):
        aggregate.buffer_add_(buffer, update, 1e-3)
    # a bfloat16 buffer would stall (the sum's ulp passes the increment); float32 holds it to ~1e-5
    np.testing.assert_allclose(buffer.numpy(), 300 * 1e-3 * (1 + 2**-7), rtol=300 * 2**-24 * 4)


def test_inplace_bad_inputs():
    b = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="update"):
        aggregate.buffer_add_(b, np.zeros(5, np.float32), 1.0)
    with pytest.raises(TypeError, match="buffer"):
        aggregate.buffer_add_(np.zeros(4, np.float16), np.zeros(4, np.float32), 1.0)
    with pytest.raises(TypeError, match="update"):
        aggregate.buffer_add_(b, torch.zeros(4), 1.0)
    with pytest.raises(ValueError, match="weight"):
        aggregate.buffer_add_(b, b.copy(), math.nan)
    with pytest.raises(ValueError, match="alpha"):
        aggregate.fedasync_mix_(b, b.copy(), 1.5)
    with pytest.raises(ValueError, match="writable"):
        ro = np.zeros(4, np.float32)
        ro.flags.writeable = False
        aggregate.buffer_add_(ro, b, 1.0)
    with pytest.raises(ValueError, match="contiguous"):
        aggregate.fedasync_mix_(np.zeros(8, np.float32)[::2], b, 0.5)
    big = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match="overlap"):
        aggregate.buffer_add_(big[:4], big[2:6], 1.0)
    same = np.ones(4, np.float32)
    aggregate.buffer_add_(same, same, 1.0)  # the same array: elementwise, allowed
    np.testing.assert_array_equal(same, 2.0)


def test_inplace_torch_ops():
    b, u = torch.randn(100), torch.randn(100)
    torch.library.opcheck(torch.ops.commkernels.buffer_add_, (b, u, 0.5))
    torch.library.opcheck(torch.ops.commkernels.fedasync_mix_, (b, u, 0.25))

    @torch.compile(fullgraph=True, backend="eager")
    def step(b, u):
        aggregate.buffer_add_(b, u, 2.0)
        return b * 1

    want = b + 2.0 * u
    torch.testing.assert_close(step(b, u), want)


# ---- variance_corrected_mean ---------------------------------------------------------------------------------

@st.composite
def vcm_cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    framework = pick_framework(draw, dtype)
    n = draw(st.integers(1, 8))
    lengths = draw(st.lists(st.one_of(st.integers(0, 3), st.integers(0, 300), st.integers(4000, 9000)),
                            min_size=1, max_size=5))
    d = sum(lengths)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "ties", "offset"]))
    if kind == "ties":  # few distinct values, duplicate workers
        X = rng.integers(-2, 3, (n, d)) * 0.5
        if n > 1:
            X[-1] = X[0]
    else:
        X = rng.standard_normal((n, d)) * rng.uniform(0.1, 3, (n, 1))
        if kind == "offset":
            X += rng.uniform(-3, 3, (n, 1))
    mode = "follow" if n == 1 else draw(st.sampled_from(["follow", "conservative"]))
    alpha = draw(st.floats(0, 1)) if mode == "conservative" else None
    eps = draw(st.sampled_from([1e-4, 1e-2, 1.0]))
    stacked = draw(st.booleans())
    rows = make(X, dtype, framework)
    Xin = rows if stacked else [rows[i].copy() if framework == "numpy" else rows[i].clone() for i in range(n)]
    return Xin, to64(rows), lengths, mode, alpha, eps, dtype


def vcm_weights(n: int, mode: str, alpha) -> np.ndarray:
    if mode == "follow":
        return np.full(n, 1.0 / n)
    return np.array([alpha] + [(1 - alpha) / (n - 1)] * (n - 1))


def vcm_bound(X64, lengths, w, eps, dtype, want) -> np.ndarray:
    """The kernel's error: the mixture m_j accumulated over n rows (n roundings of sum_i |w_i x_ij|); each
    chunk's moments summed in 16 lanes of at most 256 terms plus a 4-level tree (K = 260 roundings of the
    magnitudes involved), so the scale s has a relative error of at most ~K u; then (m - mu) s + mu (3 more
    roundings) and the rounding to dtype (16-bit: twice, m is stored first). The segment mean mu carries
    the mixture's error averaged over the segment, which reaches every output through (1 - scale) mu."""
    u, n = ACC[dtype], X64.shape[0]
    K = 260 + n
    absmix = np.abs(w) @ np.abs(X64)
    m = w @ X64
    out = np.zeros_like(want)
    start = 0
    for length in lengths:
        s = slice(start, start + length)
        start += length
        if length == 0:
            continue
        if length < 2:
            out[s] = n * u * absmix[s]
            continue
        target = float(np.sum(w * X64[:, s].var(axis=1, ddof=1)))
        mu, var = m[s].mean(), m[s].var(ddof=1)
        scale = math.sqrt((target + eps) / (var + eps))
        spread = np.abs(m[s] - mu) + np.abs(mu)
        # mu's own error (from every element's mixture, not only this one's) enters as (1 - scale) mu
        mu_error = K * u * (1 + scale) * float(absmix[s].mean())
        out[s] = (K * u * scale * (absmix[s] + spread) + mu_error + 3 * u * (np.abs(want[s]) + np.abs(mu))
                  + (UNIT[dtype] * scale * np.abs(m[s]) if UNIT[dtype] > ACC[dtype] else 0))
    return out + UNIT[dtype] * np.abs(want) + TINY[dtype]


@given(vcm_cases())
def test_variance_corrected_mean_matches_reference(case):
    X, X64, lengths, mode, alpha, eps, dtype = case
    got = aggregate.variance_corrected_mean(X, lengths, mode, alpha, eps)
    first = X if not isinstance(X, list) else X[0]
    assert type(got) is type(first) and str(got.dtype) == str(first.dtype)
    assert tuple(got.shape) == (X64.shape[1],)
    w = vcm_weights(X64.shape[0], mode, alpha)
    want = ref.variance_corrected_mean(X64, lengths, w, eps)
    err = np.abs(to64(got) - want)
    limit = vcm_bound(X64, lengths, w, eps, dtype, want)
    assert np.all(err <= limit), (float((err - limit).max()), lengths)
    np.testing.assert_array_equal(to64(X if not isinstance(X, list) else np.stack([to64(r) for r in X])), X64)


def test_variance_corrected_mean_restores_the_variance():
    rng = np.random.default_rng(3)
    n, d = 8, 50_000
    X = rng.standard_normal((n, d)).astype(np.float32)  # uncorrelated models: the plain mean's variance is 1/n
    lengths = [20_000, 30_000]
    plain = X.mean(axis=0)
    assert plain[:20_000].var(ddof=1) == pytest.approx(1 / n, rel=0.05)
    out = aggregate.variance_corrected_mean(X, lengths)
    for s in (slice(0, 20_000), slice(20_000, d)):
        target = X[:, s].var(axis=1, ddof=1).mean()
        assert out[s].var(ddof=1) == pytest.approx((target + 1e-4) * 1.0, rel=1e-3)
        assert out[s].mean() == pytest.approx(plain[s].mean(), abs=1e-6)
    # the correction keeps the direction: a positive multiple of the centered mean
    centered = plain[:20_000] - plain[:20_000].mean()
    corrected = out[:20_000] - out[:20_000].mean()
    cos = centered @ corrected / (np.linalg.norm(centered) * np.linalg.norm(corrected))
    assert cos > 1 - 1e-6


def test_variance_corrected_mean_special_cases():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(5000).astype(np.float32)
    # n identical rows: the mean is the row, the target its variance: out == x up to rounding
    np.testing.assert_allclose(aggregate.variance_corrected_mean([x, x, x]), x, rtol=0, atol=1e-5)
    # conservative with alpha = 1 is the own model
    y = rng.standard_normal(5000).astype(np.float32)
    np.testing.assert_allclose(aggregate.variance_corrected_mean([x, y], mode="conservative", alpha=1.0), x,
                               rtol=0, atol=1e-5)
    # one-element segments are left as the mean; empty ones are allowed; d = 0 gives an empty result
    X = rng.standard_normal((3, 4))
    got = aggregate.variance_corrected_mean(X, [1, 0, 1, 2])
    np.testing.assert_allclose(got[:2], X.mean(axis=0)[:2], rtol=1e-15)
    assert aggregate.variance_corrected_mean(np.zeros((3, 0), np.float32)).shape == (0,)
    # shapes: an (n, a, b) input gives an (a, b) result
    assert aggregate.variance_corrected_mean(np.ones((2, 3, 4), np.float32)).shape == (3, 4)
    # non-finite values spoil their segment only
    Z = rng.standard_normal((3, 10)).astype(np.float32)
    Z[1, 2] = np.inf
    out = aggregate.variance_corrected_mean(Z, [5, 5])
    assert not np.isfinite(out[:5]).any() and np.isfinite(out[5:]).all()


def test_variance_corrected_mean_deterministic_whatever_the_thread_count():
    X = np.random.default_rng(5).standard_normal((6, 300_000)).astype(np.float32)
    lengths = [1, 100_000, 7, 199_992]
    before, results = commkernels.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            commkernels.set_num_threads(threads)
            results.append(aggregate.variance_corrected_mean(X, lengths).tobytes())
    finally:
        commkernels.set_num_threads(before)
    assert results[0] == results[1] == results[2]


def test_variance_corrected_mean_bad_inputs():
    X = np.zeros((3, 10), np.float32)
    with pytest.raises(ValueError, match="segments"):
        aggregate.variance_corrected_mean(X, [3, 3])
    with pytest.raises(ValueError, match="segments"):
        aggregate.variance_corrected_mean(X, [12, -2])
    with pytest.raises(ValueError, match="mode"):
        aggregate.variance_corrected_mean(X, mode="others")
    with pytest.raises(ValueError, match="alpha"):
        aggregate.variance_corrected_mean(X, mode="conservative")
    with pytest.raises(ValueError, match="alpha"):
        aggregate.variance_corrected_mean(X, alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        aggregate.variance_corrected_mean(X, mode="conservative", alpha=2.0)
    with pytest.raises(ValueError, match="n >= 2"):
        aggregate.variance_corrected_mean(X[:1], mode="conservative", alpha=0.5)
    with pytest.raises(ValueError, match="eps"):
        aggregate.variance_corrected_mean(X, eps=-1.0)
    with pytest.raises(TypeError, match="X"):
        aggregate.variance_corrected_mean([X[0], X[1].astype(np.float64)])
    with pytest.raises(TypeError, match="segments"):
        aggregate.variance_corrected_mean(X, np.array([5.0, 5.0]))


def test_variance_corrected_mean_torch_op():
    X = torch.randn(4, 3000)
    torch.library.opcheck(_vcm_op, ([X], True, [1000, 2000], [0.25] * 4, 1e-4))
    torch.library.opcheck(_vcm_op, (list(X.unbind(0)), False, [3000], [0.25] * 4, 1e-4))
    Xg = torch.randn(3, 200, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(_vcm_op, ([Xg], True, [50, 150], [0.5, 0.25, 0.25], 1e-4))
    f = torch.compile(lambda X: aggregate.variance_corrected_mean(X, [1000, 2000]), fullgraph=True, backend="eager")
    torch.testing.assert_close(f(X), aggregate.variance_corrected_mean(X, [1000, 2000]))


def test_variance_corrected_mean_gradient():
    X = torch.randn(4, 30, dtype=torch.float64, requires_grad=True)
    lengths = [1, 12, 17]
    f = lambda X: aggregate.variance_corrected_mean(X, lengths, "conservative", 0.3)  # noqa: E731
    assert torch.autograd.gradcheck(f, (X,))
    rows = [torch.randn(30, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    assert torch.autograd.gradcheck(lambda *r: aggregate.variance_corrected_mean(list(r), [30]), tuple(rows))
    # against autograd through the NumPy reference's formula written in torch
    Y = torch.randn(5, 40, requires_grad=True)
    aggregate.variance_corrected_mean(Y, [40]).square().sum().backward()
    Z = Y.detach().clone().requires_grad_(True)
    m = Z.mean(0)
    ((m - m.mean()) * torch.sqrt((Z.var(dim=1).mean() + 1e-4) / (m.var() + 1e-4)) + m.mean()).square().sum().backward()
    torch.testing.assert_close(Y.grad, Z.grad, rtol=1e-4, atol=1e-5)


def test_cuda_matches_cpu(device):
    X = torch.randn(5, 20_000, device=device)
    lengths = [1, 9_000, 10_999]
    got = aggregate.variance_corrected_mean(X, lengths, "conservative", 0.4)
    want = aggregate.variance_corrected_mean(X.cpu(), lengths, "conservative", 0.4)
    assert got.device.type == device
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)
    b, u = torch.randn(10_000, device=device), torch.randn(10_000, device=device, dtype=torch.bfloat16)
    bc = b.cpu().clone()
    aggregate.buffer_add_(b, u, 0.3)
    aggregate.buffer_add_(bc, u.cpu(), 0.3)
    torch.testing.assert_close(b.cpu(), bc, rtol=1e-6, atol=1e-6)
    aggregate.fedasync_mix_(b, u, 0.3)
    aggregate.fedasync_mix_(bc, u.cpu(), 0.3)
    torch.testing.assert_close(b.cpu(), bc, rtol=1e-6, atol=1e-6)
    w = aggregate.staleness_weight(torch.arange(10, device=device), "hinge")
    assert w.device.type == device
