"""ef21_topk_ against its reference (commkernels.reference.ef), plus EF21's invariants, bad inputs and
the torch op (opcheck, torch.compile)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from commkernels import compress
from commkernels.reference import ef as ref

PAIRS = [("float32", "float32"), ("float64", "float64"), ("float16", "float16"), ("float16", "float32"),
         ("bfloat16", "bfloat16"), ("bfloat16", "float32")]
TORCH = {n: getattr(torch, n) for n in ("float32", "float64", "float16", "bfloat16")}


def values_of(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "normal":
        return rng.standard_normal(size) * 10.0 ** rng.uniform(-2, 2)
    if kind == "ties":
        return rng.integers(-3, 4, size).astype(np.float64)
    if kind == "zeros":
        return np.zeros(size)
    x = rng.standard_normal(size)  # specials
    mask = rng.random(size) < 0.1
    x[mask] = rng.choice([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30], int(mask.sum()))
    return x


def to_framework(x: np.ndarray, dtype: str, framework: str, device: str = "cpu"):
    """(kernel input, reference input): bfloat16 only in torch; the reference sees exact float32."""
    t = torch.from_numpy(x).to(TORCH[dtype])
    r = t.float().numpy() if dtype == "bfloat16" else t.numpy()
    if framework == "numpy" and dtype != "bfloat16":
        return t.numpy().copy(), r.copy()
    return t.to(device), r.copy()


def as_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        return a.float().numpy() if a.dtype == torch.bfloat16 else a.numpy()
    return np.asarray(a)


def same(a, b) -> bool:
    """Equal values, NaN == NaN, +0 == -0 treated as equal only through ==."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


@given(pair=st.sampled_from(PAIRS), framework=st.sampled_from(["numpy", "torch"]),
       size=st.integers(0, 400), kinds=st.tuples(*[st.sampled_from(["normal", "ties", "zeros", "specials"])] * 2),
       k_frac=st.floats(0, 1), seed=st.integers(0, 2**32 - 1), shape2d=st.booleans())
def test_ef21_matches_reference(pair, framework, size, kinds, k_frac, seed, shape2d):
    gdt, sdt = pair
    if "bfloat16" in pair:
        framework = "torch"
    rng = np.random.default_rng(seed)
    grad, grad_ref = to_framework(values_of(kinds[0], size, rng), gdt, framework)
    state, state_ref = to_framework(values_of(kinds[1], size, rng), sdt, framework)
    if shape2d and size % 4 == 0 and size:
        grad, state = grad.reshape(4, -1), state.reshape(4, -1)
    k = int(round(k_frac * size))
    grad_before = as_numpy(grad).copy()
    msg = compress.ef21_topk_(grad, state, k)
    values, indices, new_state = ref.ef21_topk(grad_ref, state_ref, k,
                                               state_dtype="bfloat16" if sdt == "bfloat16" else None)
    assert type(msg.values) is type(grad) and msg.size == size
    assert str(msg.values.dtype).removeprefix("torch.") == sdt
    np.testing.assert_array_equal(as_numpy(msg.indices), indices)
    assert same(as_numpy(msg.values), values)
    assert same(as_numpy(state).reshape(-1), new_state)
    assert same(as_numpy(grad), grad_before)  # grad untouched


def test_ef21_tracks_a_constant_gradient():
    # EF21's state g_i follows grad: with grad fixed, ||grad - state|| shrinks by at least the top-k
    # contraction (1 - k/d) per step in squared norm, and the receiver's copy matches exactly.
    rng = np.random.default_rng(0)
    d, k = 1000, 50
    grad = rng.standard_normal(d)
    state, receiver = np.zeros(d), np.zeros(d)
    err = np.sum(grad**2)
    for _ in range(60):
        msg = compress.ef21_topk_(grad, state, k)
        receiver += compress.decompress(msg)
        new_err = np.sum((grad - state) ** 2)
        assert new_err <= (1 - k / d) * err + 1e-12
        err = new_err
        np.testing.assert_array_equal(receiver, state)
    assert err < 1e-20 * np.sum(grad**2) or err < (1 - k / d) ** 60 * np.sum(grad**2)


def test_ef21_k_equal_size_sends_the_difference():
    rng = np.random.default_rng(1)
    grad, state = rng.standard_normal(64), rng.standard_normal(64)
    diff, before = grad - state, state.copy()
    msg = compress.ef21_topk_(grad, state, 64)
    np.testing.assert_array_equal(msg.values, diff)
    np.testing.assert_array_equal(msg.indices, np.arange(64))
    np.testing.assert_array_equal(state, before + diff)


@pytest.mark.parametrize("framework", ["numpy", "torch"])
def test_ef21_scratch_reused(framework):
    rng = np.random.default_rng(2)
    g0, s0 = rng.standard_normal(500).astype(np.float32), rng.standard_normal(500).astype(np.float32)
    conv = (lambda a: torch.from_numpy(a.copy())) if framework == "torch" else (lambda a: a.copy())
    grad, state_a, state_b = conv(g0), conv(s0), conv(s0)
    scratch = conv(np.full(500, 7.0, np.float32))
    for _ in range(3):
        a = compress.ef21_topk_(grad, state_a, 20)
        b = compress.ef21_topk_(grad, state_b, 20, scratch=scratch)
        assert same(as_numpy(a.values), as_numpy(b.values))
        np.testing.assert_array_equal(as_numpy(a.indices), as_numpy(b.indices))
    assert same(as_numpy(state_a), as_numpy(state_b))


def test_ef21_bad_inputs():
    g, s = np.zeros(10, np.float32), np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="k"):
        compress.ef21_topk_(g, s, 11)
    with pytest.raises(ValueError, match="state"):
        compress.ef21_topk_(g, np.zeros(9, np.float32), 1)
    with pytest.raises(TypeError, match="state"):
        compress.ef21_topk_(g, np.zeros(10, np.float64), 1)
    with pytest.raises(TypeError, match="state"):
        compress.ef21_topk_(g, torch.zeros(10), 1)
    with pytest.raises(TypeError, match="grad"):
        compress.ef21_topk_(np.zeros(10, np.int32), s, 1)
    with pytest.raises(ValueError, match="scratch"):
        compress.ef21_topk_(g, s, 1, scratch=np.zeros(9, np.float32))
    with pytest.raises(TypeError, match="scratch"):
        compress.ef21_topk_(g, s, 1, scratch=np.zeros(10, np.float64))
    with pytest.raises(ValueError, match="scratch"):
        compress.ef21_topk_(g, s, 1, scratch=s)
    ro = np.zeros(10, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="state"):
        compress.ef21_topk_(g, ro, 1)
    with pytest.raises(ValueError, match="state"):
        compress.ef21_topk_(g, np.zeros(20, np.float32)[::2], 1)
    jax = pytest.importorskip("jax")
    with pytest.raises(TypeError, match="state"):
        compress.ef21_topk_(g, jax.numpy.zeros(10, np.float32), 1)


def test_ef21_device_matches_cpu(device):
    rng = np.random.default_rng(3)
    for gdt, sdt in PAIRS:
        g, _ = to_framework(rng.standard_normal(5000), gdt, "torch")
        s, _ = to_framework(rng.standard_normal(5000), sdt, "torch")
        s_dev = s.clone().to(device)
        cpu = compress.ef21_topk_(g, s, 300)
        dev = compress.ef21_topk_(g.to(device), s_dev, 300)
        assert torch.equal(cpu.indices, dev.indices.cpu())
        assert torch.equal(cpu.values, dev.values.cpu())
        assert torch.equal(s, s_dev.cpu())


@pytest.mark.parametrize("gdt, sdt", PAIRS)
def test_ef21_opcheck(device, gdt, sdt):
    for n, k in ((24, 5), (10, 0), (10, 10)):
        g = torch.randn(n, generator=torch.Generator().manual_seed(n)).to(TORCH[gdt]).to(device)
        s = torch.randn(n, generator=torch.Generator().manual_seed(n + 1)).to(TORCH[sdt]).to(device)
        torch.library.opcheck(torch.ops.commkernels.ef21_topk_.default, (g, s, torch.empty_like(s), k))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_ef21_compile_fullgraph(backend):
    torch._dynamo.reset()

    def step(grad, state, scratch):
        msg = compress.ef21_topk_(grad, state, 7, scratch=scratch)
        return msg.values * 2, msg.indices

    g = torch.randn(50, generator=torch.Generator().manual_seed(4))
    s0 = torch.randn(50, generator=torch.Generator().manual_seed(5))
    s_eager, s_comp = s0.clone(), s0.clone()
    compiled = torch.compile(step, fullgraph=True, backend=backend)
    for _ in range(2):
        expected = step(g, s_eager, torch.empty(50))
        got = compiled(g, s_comp, torch.empty(50))
        for a, b in zip(got, expected):
            assert torch.equal(a, b)
        assert torch.equal(s_comp, s_eager)
