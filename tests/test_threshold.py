"""threshold and estimate_threshold against their references, exact comparisons, and bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import commkernels
from commkernels import compress
from commkernels.compress import _threshold
from commkernels.reference import compress as ref_compress
from commkernels.reference import wire as ref

DTYPES = ("float32", "float64", "float16", "bfloat16")
UINT = {"float64": np.uint64, "float32": np.uint32, "float16": np.uint16, "bfloat16": np.uint16}
SIGNED = {"float64": torch.int64, "float32": torch.int32, "float16": torch.int16, "bfloat16": torch.int16}


def make(dtype: str, framework: str, bits: np.ndarray):
    if framework == "numpy":
        return bits.astype(UINT[dtype]).view(dtype)
    return torch.from_numpy(bits.astype(np.int64)).to(SIGNED[dtype]).view(getattr(torch, dtype))


def as_float64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().to(torch.float64).numpy()
    return np.asarray(a).astype(np.float64)


def bits(a) -> bytes:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().view(SIGNED[str(a.dtype).removeprefix("torch.")]).numpy().tobytes() if a.numel() else b""
    return np.asarray(a).tobytes()


@st.composite
def arrays(draw):
    dtype = draw(st.sampled_from(DTYPES))
    framework = "torch" if dtype == "bfloat16" else draw(st.sampled_from(["numpy", "torch"]))
    n = draw(st.one_of(st.integers(0, 50), st.integers(0, 200_000)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "bits", "ties"]))
    if kind == "bits":  # every pattern: NaN, inf, subnormals, both zeros
        raw = rng.integers(0, 2 ** (8 * np.dtype(UINT[dtype]).itemsize), n, dtype=np.uint64)
        x = make(dtype, framework, raw)
    else:
        values = rng.standard_normal(n) if kind == "normal" else rng.integers(-3, 4, n) * 0.5
        x = torch.from_numpy(values).to(getattr(torch, dtype))
        x = x.numpy() if framework == "numpy" else x
    return x, dtype


@given(arrays(), st.data())
def test_threshold_matches_reference(case, data):
    x, dtype = case
    mags = np.abs(as_float64(x))
    finite = mags[np.isfinite(mags)]
    # v: an entry's exact magnitude (ties must not pass), a value in between, negative, zero, inf
    choices = [0.0, -1.0, math.inf, 0.1, 1.0]
    if finite.size:
        choices += [float(data.draw(st.sampled_from(finite.tolist())))]
        choices += [float(np.nextafter(choices[-1], -np.inf))]
    v = data.draw(st.sampled_from(choices))
    got = compress.threshold(x, v)
    want_values, want_indices = ref.threshold(as_float64(x), v)
    assert got.size == x.size if isinstance(x, np.ndarray) else got.size == x.numel()
    assert type(got.values) is type(x) and str(got.values.dtype) == str(x.dtype)
    np.testing.assert_array_equal(np.asarray(got.indices), want_indices)
    assert str(got.indices.dtype).endswith("int32")
    flat = x.reshape(-1)
    assert bits(got.values) == bits(flat[torch.from_numpy(want_indices).long()] if isinstance(x, torch.Tensor)
                                     else flat[want_indices])


def test_comparison_is_exact():
    x = np.array([0.1, -0.1, 0.2], np.float32)  # float32(0.1) = 0.10000000149...
    np.testing.assert_array_equal(compress.threshold(x, 0.1).indices, [0, 1, 2])
    np.testing.assert_array_equal(compress.threshold(x, float(np.float32(0.1))).indices, [2])
    y = np.array([np.nan, np.inf, -np.inf, 5.0], np.float64)
    np.testing.assert_array_equal(compress.threshold(y, 1e308).indices, [1, 2])
    np.testing.assert_array_equal(compress.threshold(y, math.inf).indices, [])
    np.testing.assert_array_equal(compress.threshold(y, -math.inf).indices, [1, 2, 3])


def test_threshold_deterministic_whatever_the_thread_count():
    x = np.random.default_rng(1).standard_normal(2_000_000).astype(np.float32)
    before, results = commkernels.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            commkernels.set_num_threads(threads)
            m = compress.threshold(x, 2.0)
            results.append((m.values.tobytes(), m.indices.tobytes()))
    finally:
        commkernels.set_num_threads(before)
    assert results[0] == results[1] == results[2]


@given(arrays(), st.data())
def test_estimate_exact_is_kth_largest(case, data):
    x, dtype = case
    n = x.size if isinstance(x, np.ndarray) else x.numel()
    k = data.draw(st.integers(0, n))
    t = compress.estimate_threshold(x, k)
    want = ref.kth_largest_magnitude(as_float64(x), k)
    assert (math.isnan(t) and math.isnan(want)) or t == want
    if k and not math.isnan(t):  # at least k entries reach t (NaN above all), fewer than k exceed it
        mags = np.abs(as_float64(x))
        assert int((mags >= t).sum() + np.isnan(mags).sum()) >= k
        assert int((mags > t).sum() + np.isnan(mags).sum()) < k or t == math.inf


@given(st.integers(0, 50_000), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.data())
def test_estimate_sample_matches_reference(n, seed, step, data):
    x = np.random.default_rng(seed % 2**32).standard_normal(n).astype(np.float32)
    k = data.draw(st.integers(0, n))
    t = compress.estimate_threshold(x, k, "sample", seed=seed, step=step)
    if k == 0:
        assert t == math.inf
        return
    m = _threshold.sample_size(n)
    assert m == min(n, max(1000, math.ceil(n / 100)))
    sample = x[ref_compress.randk_indices(n, m, seed, step)]
    assert t == ref.kth_largest_magnitude(sample, min(m, math.ceil(k * m / n)))
    assert t == compress.estimate_threshold(x, k, "sample", seed=seed, step=step)  # reproducible


def test_estimate_sample_is_close_on_large_input():
    x = np.random.default_rng(2).standard_normal(1_000_000).astype(np.float32)
    k = 10_000
    kept = [compress.threshold(x, compress.estimate_threshold(x, k, "sample", seed=1, step=s)).indices.size
            for s in range(5)]
    # the sample has 10^4 entries and keeps ~100: its relative error is ~1/sqrt(100) = 10%; 5 sigma
    assert all(abs(c - k) < 0.5 * k for c in kept), kept
    assert len(set(kept)) > 1  # the step changes the sample


def test_cuda_matches_cpu(device):
    x = torch.randn(300_000, device=device)
    for v in (0.0, 1.5, 3.0):
        got, want = compress.threshold(x, v), compress.threshold(x.cpu(), v)
        assert got.values.device.type == device
        torch.testing.assert_close(got.indices.cpu(), want.indices, rtol=0, atol=0)
        torch.testing.assert_close(got.values.cpu(), want.values, rtol=0, atol=0)
    for method in ("exact", "sample"):
        assert compress.estimate_threshold(x, 3000, method, 5, 6) == compress.estimate_threshold(x.cpu(), 3000, method, 5, 6)


def test_torch_opcheck_compile_and_grad(device):
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        x = torch.randn(50, dtype=dtype, device=device)
        torch.library.opcheck(torch.ops.commkernels.threshold.default, (x, 0.5))
    x = torch.randn(100, device=device, requires_grad=True)
    msg = compress.threshold(x, 1.0)
    msg.values.sum().backward()
    torch.testing.assert_close(x.grad, (x.detach().abs() > 1.0).to(x.dtype))
    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        fn = torch.compile(lambda t: compress.threshold(t, 0.5).values * 2, fullgraph=True, backend="aot_eager")
        y = torch.randn(64, device=device)
        torch.testing.assert_close(fn(y), compress.threshold(y, 0.5).values * 2)


def test_jax():
    jax = pytest.importorskip("jax")
    x = np.random.default_rng(3).standard_normal(1000).astype(np.float32)
    got = compress.threshold(jax.numpy.asarray(x), 1.0)
    assert isinstance(got.values, jax.Array)
    np.testing.assert_array_equal(np.asarray(got.indices), ref.threshold(x, 1.0)[1])
    assert compress.estimate_threshold(jax.numpy.asarray(x), 10) == compress.estimate_threshold(x, 10)


def test_bad_inputs():
    x = np.ones(10, np.float32)
    with pytest.raises(ValueError, match="v"):
        compress.threshold(x, float("nan"))
    with pytest.raises(TypeError, match="v"):
        compress.threshold(x, "1")
    with pytest.raises(TypeError, match="x"):
        compress.threshold(np.ones(3, np.int32), 0.0)
    with pytest.raises(ValueError, match="x"):
        compress.threshold(np.ones((4, 4), np.float32)[:, ::2], 0.0)
    with pytest.raises(ValueError, match="k"):
        compress.estimate_threshold(x, 11)
    with pytest.raises(ValueError, match="method"):
        compress.estimate_threshold(x, 1, "median")
    with pytest.raises(ValueError, match="seed"):
        compress.estimate_threshold(x, 1, "sample", seed=-1)
