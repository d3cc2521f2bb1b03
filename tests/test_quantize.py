"""The quantizers of commkernels.compress against their reference (commkernels.reference.quantize), plus
unbiasedness, contraction, round trips, determinism across thread counts, torch ops and bad inputs.

Arrays come from test_compress's generators (raw storage bits of every dtype, specials included).
Codes are compared bit for bit. Where a code depends on a fixed-order float32 sum (the sign scale, QSGD's
norms), the sum is compared with the float64 reference within a tolerance, and the reference is then
given the kernel's value so that the codes can be compared exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st

import commkernels
from commkernels import compress
from commkernels.reference import quantize as ref
from test_compress import (DTYPES, TORCH_DTYPE, Case, arrays, assert_same_floats, bits_of, frameworks_on, generate,
                           seeds, to_numpy)

SCALES = ("l1", "l2", None)
RESIDUAL_PAIRS = [("float32", "float32"), ("float64", "float64"), ("bfloat16", "float32"), ("bfloat16", "bfloat16"),
                  ("float16", "float32"), ("float16", "float16")]


def u8(a) -> np.ndarray:
    return to_numpy(a).reshape(-1)


def f32(a) -> np.ndarray:
    return to_numpy(a).reshape(-1).astype(np.float32)


def ref_dtype(dtype: str) -> str:
    return "float32" if dtype == "bfloat16" else dtype


def check_sum(got: float, expected: float, dtype: str, what: str) -> bool:
    """A fixed-order sum against its float64 reference; False (nothing to compare codes with) when either
    side is not finite, e.g. where a float32 partial sum overflowed that float64 did not."""
    if not (np.isfinite(got) and np.isfinite(expected)):
        event("non-finite scale")
        return False
    # both are float64 sums rounded to float32: at most one float32 step apart
    assert abs(got - expected) <= 2.0 ** -23 * abs(expected) + 2.0 ** -149, f"{what}: {got} vs reference {expected}"
    return True


def check_framework(a, framework: str, dtype: str, n: int, device: str = "cpu") -> None:
    if framework == "torch":
        assert isinstance(a, torch.Tensor) and a.dtype == TORCH_DTYPE.get(dtype, getattr(torch, dtype))
        assert a.device.type == device
    else:
        assert isinstance(a, np.ndarray) and a.dtype == np.dtype(dtype)
    assert tuple(a.shape) == (n,)


# ---- kernel == reference ------------------------------------------------------------------------------

@given(data=st.data())
def test_sign_compress_matches_reference(device, data):
    case = data.draw(arrays(frameworks=frameworks_on(device), max_size=70_000), label="x")
    scale = data.draw(st.sampled_from(SCALES), label="scale")
    msg = compress.sign_compress(case.make(device), scale)
    bits, s = ref.sign_compress(case.ref_input(), scale)
    check_framework(msg.bits, case.framework, "uint8", (case.size + 7) // 8, device)
    check_framework(msg.scale, case.framework, "float32", 1, device)
    assert msg.size == case.size
    np.testing.assert_array_equal(u8(msg.bits), bits)
    got = float(f32(msg.scale)[0])
    if scale is None:
        assert got == 1.0
    else:
        check_sum(got, float(s), case.dtype, "scale")
    out = compress.sign_decompress(msg)
    assert_same_floats(f32(out), ref.sign_decompress(bits, got, case.size), "sign_decompress")


@given(data=st.data())
def test_terngrad_matches_reference(device, data):
    case = data.draw(arrays(frameworks=frameworks_on(device), max_size=70_000), label="x")
    seed, step = data.draw(seeds, label="seed"), data.draw(seeds, label="step")
    msg = compress.terngrad(case.make(device), seed, step)
    codes, s = ref.terngrad(case.ref_input(), seed, step)
    check_framework(msg.codes, case.framework, "uint8", (case.size + 3) // 4, device)
    assert_same_floats(f32(msg.scale), np.array([s], np.float32), "scale")
    np.testing.assert_array_equal(u8(msg.codes), codes)
    assert set(np.unique(ref.unpack_codes(codes, 2, case.size)).tolist()) <= {0, 1, 3}
    out = compress.terngrad_decompress(msg)
    assert_same_floats(f32(out), ref.terngrad_decompress(codes, s, case.size), "terngrad_decompress")


qsgd_params = st.tuples(st.one_of(st.integers(1, 20), st.sampled_from([127, 255, 256, 1023, 65535])),
                        st.one_of(st.integers(1, 70), st.sampled_from([128, 512, 4096, 10_000, 70_000])))


@given(data=st.data())
def test_qsgd_matches_reference(device, data):
    case = data.draw(arrays(frameworks=frameworks_on(device), max_size=70_000), label="x")
    levels, bucket_size = data.draw(qsgd_params, label="levels, bucket_size")
    seed, step = data.draw(seeds, label="seed"), data.draw(seeds, label="step")
    msg = compress.qsgd(case.make(device), levels, seed, step, bucket_size)
    x = case.ref_input()
    norms = f32(msg.norms)
    expected_norms = ref.qsgd_norms(x, bucket_size)
    assert norms.shape == expected_norms.shape
    for got, expected in zip(norms[:50], expected_norms[:50]):
        if np.isnan(expected):
            assert np.isnan(got)
        else:
            check_sum(float(got), float(expected), case.dtype, "norm")
    codes, _ = ref.qsgd(x, levels, seed, step, bucket_size, norms=norms)
    check_framework(msg.codes, case.framework, "uint8", (case.size * ref.qsgd_code_bits(levels) + 7) // 8, device)
    np.testing.assert_array_equal(u8(msg.codes), codes)
    out = compress.qsgd_decompress(msg)
    assert_same_floats(f32(out), ref.qsgd_decompress(codes, norms, levels, bucket_size, case.size), "qsgd_decompress")


@given(data=st.data())
def test_natural_compress_matches_reference(device, data):
    case = data.draw(arrays(frameworks=frameworks_on(device), max_size=70_000), label="x")
    seed, step = data.draw(seeds, label="seed"), data.draw(seeds, label="step")
    msg = compress.natural_compress(case.make(device), seed, step)
    codes = ref.natural_compress(case.ref_input(), seed, step)
    check_framework(msg.codes, case.framework, "uint8", case.size, device)
    np.testing.assert_array_equal(u8(msg.codes), codes)
    assert_same_floats(f32(compress.natural_decompress(msg)), ref.natural_decompress(codes), "natural_decompress")


@given(data=st.data())
def test_stochastic_round_matches_reference(device, data):
    case = data.draw(arrays(dtypes=("float32",), frameworks=frameworks_on(device), max_size=70_000), label="x")
    dtype = data.draw(st.sampled_from(["bfloat16", "float16"]), label="dtype")
    seed, step = data.draw(seeds, label="seed"), data.draw(seeds, label="step")
    x = case.make(device)
    if dtype == "bfloat16" and case.framework == "numpy":
        x = torch.from_numpy(x) if device == "cpu" else x
    out = compress.stochastic_round(x, dtype, seed, step)
    expected = ref.stochastic_round(case.ref_input(), dtype, seed, step)
    got = to_numpy(out).reshape(-1)
    assert_same_floats(got, expected, "stochastic_round")
    if dtype == "float16":  # the bits, signs of zeros included
        nan = np.isnan(expected)
        np.testing.assert_array_equal(got.view(np.uint16)[~nan], expected.view(np.uint16)[~nan])


@given(data=st.data())
def test_ef_variants_match_reference(device, data):
    grad_dtype, residual_dtype = data.draw(st.sampled_from(RESIDUAL_PAIRS), label="dtypes")
    size = data.draw(st.integers(0, 20_000), label="size")
    seed_value = data.draw(st.integers(0, 2**32 - 1), label="data seed")
    rng = np.random.default_rng(seed_value)
    kind = data.draw(st.sampled_from(["normal", "ties", "specials", "wide"]), label="kind")
    g = Case(grad_dtype, "torch", (size,), kind, generate(kind, size, grad_dtype, rng))
    r = Case(residual_dtype, "torch", (size,), "normal", generate("normal", size, residual_dtype, rng))
    store = residual_dtype if residual_dtype == "bfloat16" else None
    seed, step = data.draw(seeds, label="seed"), data.draw(seeds, label="step")
    which = data.draw(st.sampled_from(["sign", "terngrad", "qsgd", "natural"]), label="compressor")
    residual = r.make(device)
    gi, ri = g.ref_input(), r.ref_input()
    if which == "sign":
        scale = data.draw(st.sampled_from(SCALES), label="scale")
        msg = compress.sign_compress_ef_(g.make(device), residual, scale)
        got_scale = float(f32(msg.scale)[0])
        _, s, _ = ref.sign_compress_ef(gi, ri, scale, store)
        if scale is not None and not check_sum(got_scale, float(s), residual_dtype, "scale"):
            return
        codes, _, new_residual = ref.sign_compress_ef(gi, ri, scale, store, scale_value=got_scale)
        got_codes = msg.bits
    elif which == "terngrad":
        msg = compress.terngrad_ef_(g.make(device), residual, seed, step)
        codes, s, new_residual = ref.terngrad_ef(gi, ri, seed, step, store)
        assert_same_floats(f32(msg.scale), np.array([s], np.float32), "scale")
        got_codes = msg.codes
    elif which == "qsgd":
        levels, bucket_size = data.draw(qsgd_params, label="levels, bucket_size")
        msg = compress.qsgd_ef_(g.make(device), residual, levels, seed, step, bucket_size)
        codes, _, new_residual = ref.qsgd_ef(gi, ri, levels, seed, step, bucket_size, store, norms=f32(msg.norms))
        got_codes = msg.codes
    else:
        msg = compress.natural_compress_ef_(g.make(device), residual, seed, step)
        codes, new_residual = ref.natural_compress_ef(gi, ri, seed, step, store)
        got_codes = msg.codes
    np.testing.assert_array_equal(u8(got_codes), codes)
    assert_same_floats(to_numpy(residual).reshape(-1), new_residual, "residual")


# ---- unbiasedness --------------------------------------------------------------------------------------
# d fixed values, each compressed n times in one call (x tiled: every copy draws independently). The mean
# of the decompressed copies must be within z standard errors of x, elementwise, where the standard error
# is the exact sqrt(Var / n) of that compressor; z = 5.5 bounds the chance of a false failure by
# d * 4e-8 (a union bound over the d elements). Elements whose variance is 0 must come out exact.

N_DRAWS = 4000
Z = 5.5


def unbiased_values(d=40, seed=11):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(d) * np.exp(rng.uniform(-3, 3, d))
    x[:3] = [0.0, 1.0, -0.25]  # exact values of every quantizer here
    return x.astype(np.float32)


def assert_unbiased(decoded: np.ndarray, x: np.ndarray, variance: np.ndarray, what: str) -> None:
    mean = decoded.reshape(N_DRAWS, x.size).astype(np.float64).mean(axis=0)
    x = x.astype(np.float64)
    exact = variance == 0
    np.testing.assert_allclose(mean[exact], x[exact], rtol=1e-12, atol=0, err_msg=f"{what}: exact elements")
    z = np.abs(mean - x)[~exact] / np.sqrt(variance[~exact] / N_DRAWS)
    assert z.max() <= Z, f"{what}: z = {z.max():.2f} at element {np.argmax(z)}"


def test_terngrad_is_unbiased():
    x = unbiased_values()
    msg = compress.terngrad(np.tile(x, N_DRAWS), 5, 6)
    s = np.float64(f32(msg.scale)[0])
    a = np.abs(x.astype(np.float64))
    assert_unbiased(f32(compress.terngrad_decompress(msg)), x, a * (s - a), "terngrad")


@pytest.mark.parametrize("levels", [1, 4, 255])
def test_qsgd_is_unbiased(levels):
    x = unbiased_values()
    msg = compress.qsgd(np.tile(x, N_DRAWS), levels, 5, 6, x.size)  # one bucket per copy: same norm
    norm = np.float64(f32(msg.norms)[0])
    assert np.all(f32(msg.norms) == f32(msg.norms)[0])
    r = np.abs(x.astype(np.float64)) * levels / norm
    f = r - np.floor(r)
    assert_unbiased(f32(compress.qsgd_decompress(msg)), x, (norm / levels) ** 2 * f * (1 - f), f"qsgd({levels})")


def test_natural_compress_is_unbiased():
    x = unbiased_values()
    msg = compress.natural_compress(np.tile(x, N_DRAWS), 5, 6)
    a = np.abs(x.astype(np.float64))
    lo = np.where(a > 0, 2.0 ** np.floor(np.log2(np.where(a > 0, a, 1))), 0)
    assert_unbiased(f32(compress.natural_decompress(msg)), x, (2 * lo - a) * (a - lo), "natural_compress")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_stochastic_round_is_unbiased(dtype):
    x = unbiased_values()
    x[3:6] = [1e-6, 3e-7, 65000.0]  # float16 subnormals and its top binade
    out = compress.stochastic_round(torch.from_numpy(np.tile(x, N_DRAWS)), dtype, 5, 6)
    a = np.abs(x.astype(np.float64))
    tdt = getattr(torch, dtype)
    near = torch.from_numpy(np.abs(x)).to(tdt)  # the nearest value; its neighbours on either side
    below = torch.nextafter(near, torch.zeros_like(near)).double().numpy()
    above = torch.nextafter(near, torch.full_like(near, float("inf"))).double().numpy()
    near = near.double().numpy()
    lo, hi = np.where(near > a, below, near), np.where(near > a, near, above)
    hi = np.where(np.isinf(hi), 65536.0 if dtype == "float16" else 2.0 ** 128, hi)
    variance = (hi - a) * (a - lo)
    assert_unbiased(out.float().numpy(), x, variance, f"stochastic_round({dtype})")


def assert_variance_bound(decoded: np.ndarray, x: np.ndarray, expected: float, omega: float, what: str) -> None:
    """Per copy k, Y_k = ||C(x) - x||^2. Its mean must match the exact expectation E[Y] (two-sided, Z
    standard errors estimated from the Y_k), and E[Y] must respect the compressor's bound omega ||x||^2."""
    errors = ((decoded.reshape(N_DRAWS, x.size).astype(np.float64) - x.astype(np.float64)) ** 2).sum(axis=1)
    norm2 = float(np.sum(x.astype(np.float64) ** 2))
    sem = errors.std(ddof=1) / np.sqrt(N_DRAWS)
    assert abs(errors.mean() - expected) <= Z * sem, f"{what}: mean squared error {errors.mean()} vs {expected}"
    assert expected <= omega * norm2, f"{what}: E||C(x) - x||^2 = {expected} > omega ||x||^2 = {omega * norm2}"


@pytest.mark.parametrize("levels", [1, 4, 255])
def test_qsgd_variance_bound(levels):
    x = unbiased_values()
    msg = compress.qsgd(np.tile(x, N_DRAWS), levels, 7, 8, x.size)
    norm = np.float64(f32(msg.norms)[0])
    r = np.abs(x.astype(np.float64)) * levels / norm
    f = r - np.floor(r)
    expected = float(np.sum((norm / levels) ** 2 * f * (1 - f)))
    omega = min(x.size / levels**2, np.sqrt(x.size) / levels)  # QSGD, Lemma 3.1 (one bucket of d = x.size)
    assert_variance_bound(f32(compress.qsgd_decompress(msg)), x, expected, omega, f"qsgd({levels})")


def test_natural_compress_variance_bound():
    x = unbiased_values()
    msg = compress.natural_compress(np.tile(x, N_DRAWS), 7, 8)
    a = np.abs(x.astype(np.float64))
    lo = np.where(a > 0, 2.0 ** np.floor(np.log2(np.where(a > 0, a, 1))), 0)
    expected = float(np.sum((2 * lo - a) * (a - lo)))
    assert_variance_bound(f32(compress.natural_decompress(msg)), x, expected, 1 / 8, "natural_compress")  # omega = 1/8


def test_terngrad_variance():
    x = unbiased_values()
    msg = compress.terngrad(np.tile(x, N_DRAWS), 7, 8)
    s = np.float64(f32(msg.scale)[0])
    a = np.abs(x.astype(np.float64))
    expected = float(np.sum(a * (s - a)))
    # TernGrad: E||C(x) - x||^2 = s ||x||_1 - ||x||^2, i.e. omega = s ||x||_1 / ||x||^2 - 1 for this x
    omega = s * a.sum() / np.sum(a * a) - 1
    assert_variance_bound(f32(compress.terngrad_decompress(msg)), x, expected, omega * (1 + 1e-12), "terngrad")


def test_different_steps_draw_differently():
    x = unbiased_values(4000)
    assert not np.array_equal(u8(compress.terngrad(x, 1, 1).codes), u8(compress.terngrad(x, 1, 2).codes))
    assert not np.array_equal(u8(compress.qsgd(x, 4, 1, 1).codes), u8(compress.qsgd(x, 4, 2, 1).codes))
    assert not np.array_equal(u8(compress.natural_compress(x, 1, 1).codes), u8(compress.natural_compress(x, 1, 2).codes))


# ---- contraction, round trips, determinism -----------------------------------------------------------------

@given(data=st.data())
def test_sign_l1_is_a_contraction(data):
    case = data.draw(arrays(dtypes=("float32", "float64"), frameworks=("numpy",), min_size=1, max_size=5000), label="x")
    x = case.ref_input().astype(np.float64)
    if not np.all(np.isfinite(x)) or not np.any(x) or np.sum(x * x) > 1e300 or np.sum(x * x) < 1e-300:
        event("skipped: non-finite, zero or out-of-range norm")
        return
    if not 1e-30 < np.mean(np.abs(x)) < 1e38:  # the scale is float32
        event("skipped: scale outside the float32 range")
        return
    msg = compress.sign_compress(case.make(), "l1")
    c = f32(compress.sign_decompress(msg, "float64" if case.dtype == "float64" else "float32")).astype(np.float64)
    err, norm2 = np.sum((c - x) ** 2), np.sum(x * x)
    delta = np.sum(np.abs(x)) ** 2 / (x.size * norm2)
    # ||s sign(x) - x||^2 = ||x||^2 - ||x||_1^2 / d exactly for s = ||x||_1 / d; the slack covers the float32 scale
    assert err <= (1 - delta) * norm2 + 1e-5 * norm2


@given(data=st.data())
def test_round_trips(data):
    case = data.draw(arrays(dtypes=("float32", "float64", "float16"), frameworks=("numpy",), max_size=5000), label="x")
    x = case.make()
    with np.errstate(over="ignore"):
        if not np.all(np.isfinite(x.astype(np.float32))):  # float32 scales of float64 data may overflow
            event("skipped: non-finite in float32")
            return
    m = compress.sign_compress(x, None)
    np.testing.assert_array_equal(u8(compress.sign_compress(compress.sign_decompress(m), None).bits), u8(m.bits))
    m = compress.terngrad(x, 1, 2)
    again = compress.terngrad(compress.terngrad_decompress(m), 3, 4)
    np.testing.assert_array_equal(u8(again.codes), u8(m.codes))
    if u8(m.codes).any():  # (a float64 max rounded up to float32 may go unsent; then all is 0)
        assert_same_floats(f32(again.scale), f32(m.scale), "scale")
    else:
        assert f32(again.scale)[0] == 0
    m = compress.natural_compress(x, 1, 2)
    np.testing.assert_array_equal(u8(compress.natural_compress(compress.natural_decompress(m), 3, 4).codes), u8(m.codes))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_bitwise_same_whatever_the_thread_count(dtype):
    size = 300_001
    rng = np.random.default_rng(3)
    x = Case(dtype, "torch", (size,), "normal", generate("normal", size, dtype, rng))
    r = Case(dtype if dtype == "float64" else "float32", "torch", (size,), "normal",
             generate("normal", size, dtype if dtype == "float64" else "float32", rng))
    saved = commkernels.get_num_threads()
    outputs = []
    try:
        for threads in (1, 2, 3):
            commkernels.set_num_threads(threads)
            out = []
            for scale in SCALES:
                out += list(compress.sign_compress(x.make(), scale)[:2])
                residual = r.make()
                out += list(compress.sign_compress_ef_(x.make(), residual, scale)[:2]) + [residual]
            out += list(compress.terngrad(x.make(), 1, 2)[:2])
            out += list(compress.qsgd(x.make(), 15, 1, 2, 100)[:2]) + list(compress.qsgd(x.make(), 3, 1, 2, 100_000)[:2])
            residual = r.make()
            out += list(compress.qsgd_ef_(x.make(), residual, 15, 1, 2, 1000)[:2]) + [residual]
            residual = r.make()
            out += list(compress.terngrad_ef_(x.make(), residual, 1, 2)[:2]) + [residual]
            out += [compress.natural_compress(x.make(), 1, 2).codes]
            if dtype == "float32":
                out += [compress.stochastic_round(x.make(), "bfloat16", 1, 2)]
            outputs.append([bits_of(a) for a in out])
    finally:
        commkernels.set_num_threads(saved)
    for other in outputs[1:]:
        for a, b in zip(outputs[0], other):
            np.testing.assert_array_equal(a, b)


def test_cuda_matches_cpu(device):
    if device == "cpu":
        pytest.skip("compares the CUDA kernels with the CPU ones")
    size = 100_003
    rng = np.random.default_rng(5)
    for dtype in DTYPES:
        case = Case(dtype, "torch", (size,), "normal", generate("normal", size, dtype, rng))
        rdt = "float64" if dtype == "float64" else "float32"
        rcase = Case(rdt, "torch", (size,), "normal", generate("normal", size, rdt, rng))
        results = {}
        for dev in ("cpu", "cuda"):
            out = []
            for scale in SCALES:
                out += list(compress.sign_compress(case.make(dev), scale)[:2])
                residual = rcase.make(dev)
                out += list(compress.sign_compress_ef_(case.make(dev), residual, scale)[:2]) + [residual]
            m = compress.terngrad(case.make(dev), 1, 2)
            out += list(m[:2]) + [compress.terngrad_decompress(m)]
            residual = rcase.make(dev)
            out += list(compress.terngrad_ef_(case.make(dev), residual, 1, 2)[:2]) + [residual]
            for levels, bucket in ((15, 512), (3, 70_000), (255, 7)):
                m = compress.qsgd(case.make(dev), levels, 1, 2, bucket)
                out += list(m[:2]) + [compress.qsgd_decompress(m)]
            residual = rcase.make(dev)
            out += list(compress.qsgd_ef_(case.make(dev), residual, 15, 1, 2, 512)[:2]) + [residual]
            m = compress.natural_compress(case.make(dev), 1, 2)
            out += [m.codes, compress.natural_decompress(m)]
            residual = rcase.make(dev)
            out += [compress.natural_compress_ef_(case.make(dev), residual, 1, 2).codes, residual]
            out += [compress.sign_decompress(compress.sign_compress(case.make(dev)), "bfloat16")]
            if dtype == "float32":
                out += [compress.stochastic_round(case.make(dev), t, 1, 2) for t in ("bfloat16", "float16")]
            results[dev] = [bits_of(a) for a in out]
        for i, (a, b) in enumerate(zip(results["cpu"], results["cuda"])):
            np.testing.assert_array_equal(a, b, err_msg=f"{dtype}: output {i}")


# ---- frameworks ----------------------------------------------------------------------------------------

def test_jax_in_jax_out():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    x = jnp.asarray(unbiased_values(100))
    for msg, arrays_ in ((compress.sign_compress(x), ("bits", "scale")), (compress.terngrad(x, 1, 2), ("codes", "scale")),
                         (compress.qsgd(x, 4, 1, 2, 16), ("codes", "norms")), (compress.natural_compress(x, 1, 2), ("codes",))):
        for name in arrays_:
            assert isinstance(getattr(msg, name), jax.Array)
    assert isinstance(compress.terngrad_decompress(compress.terngrad(x, 1, 2)), jax.Array)
    assert isinstance(compress.stochastic_round(x, "float16", 1, 2), jax.Array)
    np.testing.assert_array_equal(np.asarray(compress.natural_compress(x, 1, 2).codes),
                                  ref.natural_compress(np.asarray(x), 1, 2))


def test_inputs_are_not_modified():
    x = unbiased_values(1000)
    saved = x.copy()
    compress.sign_compress(x)
    compress.terngrad(x, 1, 2)
    compress.qsgd(x, 4, 1, 2)
    compress.natural_compress(x, 1, 2)
    compress.stochastic_round(x, "float16", 1, 2)
    np.testing.assert_array_equal(x, saved)
    g, r = unbiased_values(1000, 1), unbiased_values(1000, 2)
    g_saved = g.copy()
    compress.qsgd_ef_(g, r, 4, 1, 2)
    np.testing.assert_array_equal(g, g_saved)


def test_empty_inputs():
    x = np.zeros(0, np.float32)
    m = compress.sign_compress(x)
    assert m.bits.size == 0 and m.scale[0] == 0 and compress.sign_decompress(m).size == 0
    m = compress.terngrad(x, 1, 2)
    assert m.codes.size == 0 and m.scale[0] == 0 and compress.terngrad_decompress(m).size == 0
    m = compress.qsgd(x, 4, 1, 2)
    assert m.codes.size == 0 and m.norms.size == 0 and compress.qsgd_decompress(m).size == 0
    assert compress.natural_decompress(compress.natural_compress(x, 1, 2)).size == 0
    assert compress.stochastic_round(x, "float16", 1, 2).size == 0
    r = np.zeros(0, np.float32)
    compress.sign_compress_ef_(x, r)
    compress.qsgd_ef_(x, r, 3, 1, 2)


# ---- torch ops -----------------------------------------------------------------------------------------

ops = torch.ops.commkernels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
def test_opcheck(device, dtype):
    x = torch.randn(3, 7, dtype=dtype, device=device, generator=torch.Generator().manual_seed(0)) if device == "cpu" \
        else torch.randn(3, 7, dtype=dtype).to(device)
    rdtype = torch.float64 if dtype == torch.float64 else torch.float32
    residual = torch.randn(3, 7, dtype=rdtype).to(device)
    check = torch.library.opcheck
    for kind in (0, 1, 2):
        check(ops.sign_compress.default, (x, kind))
        check(ops.sign_compress_ef_.default, (x, residual.clone(), kind))
    bits, scale = ops.sign_compress(x, 1)
    check(ops.sign_decompress.default, (bits, scale, 21, "float32"))
    check(ops.terngrad.default, (x, -1, 2**62))
    check(ops.terngrad_ef_.default, (x, residual.clone(), 1, 2))
    codes, scale = ops.terngrad(x, 1, 2)
    check(ops.terngrad_decompress.default, (codes, scale, 21, "bfloat16"))
    check(ops.qsgd.default, (x, 7, 1, 2, 5))
    check(ops.qsgd_ef_.default, (x, residual.clone(), 7, 1, 2, 5))
    codes, norms = ops.qsgd(x, 7, 1, 2, 5)
    check(ops.qsgd_decompress.default, (codes, norms, 7, 5, 21, "float32"))
    check(ops.natural_compress.default, (x, 1, 2))
    check(ops.natural_compress_ef_.default, (x, residual.clone(), 1, 2))
    check(ops.natural_decompress.default, (ops.natural_compress(x, 1, 2), "float16"))
    if dtype == torch.float32:
        check(ops.stochastic_round.default, (x, "bfloat16", 1, 2))
        check(ops.stochastic_round.default, (x, "float16", 1, 2))


def quantize_step(grad, residual, x):
    sign = compress.sign_compress_ef_(grad, residual, "l1")
    tern = compress.terngrad(x, 3, 4)
    q = compress.qsgd(x, 15, 3, 4, 16)
    nat = compress.natural_compress(x, 3, 4)
    return (sign.bits, sign.scale, compress.sign_decompress(sign), tern.codes, compress.terngrad_decompress(tern),
            q.codes, q.norms, compress.qsgd_decompress(q), compress.natural_decompress(nat),
            compress.stochastic_round(x, "bfloat16", 3, 4))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_matches_eager(backend):
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(1)
    grad, residual, x = (torch.randn(100, generator=g) for _ in range(3))
    r_eager, r_compiled = residual.clone(), residual.clone()
    eager = quantize_step(grad, r_eager, x)
    compiled = torch.compile(quantize_step, fullgraph=True, backend=backend)(grad, r_compiled, x)
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)
    assert torch.equal(r_eager, r_compiled)


# ---- bad inputs ----------------------------------------------------------------------------------------

def test_bad_inputs():
    x = unbiased_values(64)
    with pytest.raises(ValueError, match="scale"):
        compress.sign_compress(x, "l3")
    with pytest.raises(TypeError, match="x"):
        compress.sign_compress(np.arange(8, dtype=np.int32))
    with pytest.raises(TypeError, match="x"):
        compress.terngrad([1.0, 2.0], 1, 2)
    with pytest.raises(ValueError, match="x"):
        compress.qsgd(np.zeros((4, 4), np.float32)[:, ::2], 4, 1, 2)
    with pytest.raises(ValueError, match="levels"):
        compress.qsgd(x, 0, 1, 2)
    with pytest.raises(ValueError, match="levels"):
        compress.qsgd(x, 65536, 1, 2)
    with pytest.raises(ValueError, match="bucket_size"):
        compress.qsgd(x, 4, 1, 2, 0)
    with pytest.raises(TypeError, match="levels"):
        compress.qsgd(x, 4.0, 1, 2)
    with pytest.raises(ValueError, match="seed"):
        compress.terngrad(x, -1, 2)
    with pytest.raises(ValueError, match="step"):
        compress.natural_compress(x, 1, 2**64)
    with pytest.raises(TypeError, match="x"):
        compress.stochastic_round(x.astype(np.float64), "float16", 1, 2)
    with pytest.raises(ValueError, match="dtype"):
        compress.stochastic_round(x, "int8", 1, 2)
    with pytest.raises(TypeError, match="bfloat16"):
        compress.stochastic_round(x, "bfloat16", 1, 2)  # NumPy has no bfloat16
    with pytest.raises(ValueError, match="residual"):
        compress.sign_compress_ef_(x, np.zeros(63, np.float32))
    with pytest.raises(TypeError, match="residual"):
        compress.terngrad_ef_(x, np.zeros(64, np.float64), 1, 2)
    with pytest.raises(TypeError, match="residual"):
        compress.qsgd_ef_(x, torch.zeros(64), 4, 1, 2)
    readonly = np.zeros(64, np.float32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="residual"):
        compress.natural_compress_ef_(x, readonly, 1, 2)
    m = compress.sign_compress(x)
    with pytest.raises(ValueError, match="msg.bits"):
        compress.sign_decompress(m._replace(size=65))
    with pytest.raises(TypeError, match="msg.scale"):
        compress.sign_decompress(m._replace(scale=np.ones(1, np.float64)))
    with pytest.raises(ValueError, match="dtype"):
        compress.sign_decompress(m, "int32")
    q = compress.qsgd(x, 4, 1, 2, 16)
    with pytest.raises(ValueError, match="msg.norms"):
        compress.qsgd_decompress(q._replace(bucket_size=8))
    with pytest.raises(ValueError, match="msg.codes"):
        compress.qsgd_decompress(q._replace(levels=8))
    t = compress.terngrad(x, 1, 2)
    with pytest.raises(TypeError, match="msg"):
        compress.terngrad_decompress(t._replace(scale=torch.ones(1)))
    with pytest.raises(TypeError, match="msg.codes"):
        compress.natural_decompress(compress.NaturalMsg(np.zeros(4, np.int32), 4))


def test_kernels_check_their_arguments_directly():
    """A direct call to the compiled module never writes out of bounds."""
    from commkernels import _cpu

    x = unbiased_values(64)
    with pytest.raises(ValueError, match="bits"):
        _cpu.sign_compress(x, 1, np.zeros(7, np.uint8), np.zeros(1, np.float32))
    with pytest.raises(ValueError, match="scale"):
        _cpu.sign_compress(x, 3, np.zeros(8, np.uint8), np.zeros(1, np.float32))
    with pytest.raises(ValueError, match="codes"):
        _cpu.qsgd(x, 4, 16, 1, 2, np.zeros(31, np.uint8), np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="norms"):
        _cpu.qsgd(x, 4, 16, 1, 2, np.zeros(32, np.uint8), np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="out"):
        _cpu.stochastic_round(x, 1, 2, np.zeros(64, np.float32))
    with pytest.raises(TypeError, match="codes"):
        _cpu.natural_decompress(np.zeros(64, np.float32), np.zeros(64, np.float32))


DISPATCH_SCRIPT = r"""
import hashlib, json
import numpy as np, torch
from commkernels import compress
rng = np.random.default_rng(9)
x = rng.standard_normal(300_007).astype(np.float32)
x[::7] = 0.0
x[::13] = -0.0
x[::11] *= 1e30
x[5::17] = np.nan
x[3::19] = -np.inf
out = {}
for name, a in (("float32", torch.from_numpy(x)), ("bfloat16", torch.from_numpy(x).bfloat16())):
    for scale in ("l1", "l2", None):
        m = compress.sign_compress(a, scale)
        out[f"{name} {scale}"] = [hashlib.sha256(m.bits.numpy().tobytes()).hexdigest(), m.scale.numpy().tobytes().hex()]
    finite = torch.nan_to_num(a, nan=1.0, posinf=2.0, neginf=-3.0)
    for scale in ("l1", "l2"):
        m = compress.sign_compress(finite, scale)
        out[f"{name} finite {scale}"] = [hashlib.sha256(m.bits.numpy().tobytes()).hexdigest(), m.scale.numpy().tobytes().hex()]
    residual = torch.from_numpy(rng.standard_normal(x.size).astype(np.float32))
    arrays = list(compress.terngrad(finite, 1, 2)[:2]) + list(compress.qsgd(finite, 7, 1, 2, 100)[:2])
    arrays += list(compress.qsgd(finite, 300, 1, 2, 100)[:2])  # 10-bit codes
    arrays += list(compress.qsgd_ef_(finite, residual, 7, 3, 4, 100)[:2]) + [residual]
    arrays += list(compress.terngrad_ef_(finite, residual, 3, 4)[:2]) + [residual]
    for scale in ("l1", "l2", None):  # float32 residual: the AVX-512 scale and sign/residual passes
        arrays += list(compress.sign_compress_ef_(finite, residual, scale)[:2]) + [residual]
    arrays += [compress.natural_compress(a, 1, 2).codes]
    if name == "float32":
        arrays += [compress.stochastic_round(a, t, 1, 2).view(torch.int16) for t in ("bfloat16", "float16")]
    out[f"{name} stochastic"] = [hashlib.sha256(t.numpy().tobytes()).hexdigest() for t in arrays]
print(json.dumps(out))
"""


def test_avx512_paths_match_baseline_paths(run_python):
    import json

    avx512, baseline = (json.loads(run_python(DISPATCH_SCRIPT, avx512)) for avx512 in (True, False))
    assert avx512 == baseline and avx512
