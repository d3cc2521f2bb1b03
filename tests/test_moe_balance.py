"""MoE capacity, load-balancing loss, z-loss, expert-bias update and expert choice against the NumPy
float64 references (commkernels.reference.moe_balance), the anchors' own expressions, and bad inputs."""

from __future__ import annotations

import decimal
import fractions
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from commkernels import moe
from commkernels.reference import moe_balance as ref

FORMULAS = ("megatron", "deepspeed", "tutel", "megablocks")


# ---- capacity -----------------------------------------------------------------------------------------

def anchor_capacity(T, k, E, factor, formula):
    """The anchors' expressions, as their sources write them (DeepSpeed through torch itself)."""
    if formula == "megatron":
        return math.ceil(((T * k) / E) * factor)
    if formula == "deepspeed":
        return int(torch.ceil((T / E) * torch.tensor(factor * k)).to(torch.int64))
    if formula == "tutel":
        return k * int(factor * ((T + E - 1) // E))
    return int(factor * (k * T / E))


factors = st.one_of(st.sampled_from([0.5, 1.0, 1.1, 1.15, 1.2, 1.25, 1.5, 2.0, 0.7, 4.0]),
                    st.floats(0.01, 8.0, allow_nan=False))


@given(st.integers(0, 100_000), st.integers(1, 512), st.data(), factors, st.integers(0, 64), st.integers(1, 128),
       st.sampled_from(FORMULAS))
def test_capacity_matches_reference(T, E, data, factor, min_capacity, align, formula):
    k = data.draw(st.integers(1, E))
    got = moe.capacity(T, k, E, factor, min_capacity, align, formula)
    assert got == ref.capacity(T, k, E, factor, min_capacity, align, formula)
    assert got % align == 0 and got >= min_capacity
    # the anchors' float expressions differ from the exact value by at most one before min/align
    anchor = moe.capacity(T, k, E, factor, formula=formula, exact=False)
    assert anchor == anchor_capacity(T, k, E, factor, formula)
    assert abs(anchor - moe.capacity(T, k, E, factor, formula=formula)) <= 1


def test_capacity_anchor_quirks():
    # documented examples where the anchors' float arithmetic crosses an integer
    assert moe.capacity(100, 1, 1, 1.1) == 110 and moe.capacity(100, 1, 1, 1.1, exact=False) == 111
    assert moe.capacity(100, 1, 8, 1.2, formula="deepspeed") == 15
    assert moe.capacity(100, 1, 8, 1.2, formula="deepspeed", exact=False) == 16 == anchor_capacity(100, 1, 8, 1.2, "deepspeed")
    for formula in ("tutel", "megablocks"):
        assert moe.capacity(100, 1, 1, 1.15, formula=formula) == 115
        assert moe.capacity(100, 1, 1, 1.15, formula=formula, exact=False) == 114
    # formulas, hand-computed: T=10, k=2, E=4, f=1.5
    assert moe.capacity(10, 2, 4, 1.5, formula="megatron") == 8        # ceil(7.5)
    assert moe.capacity(10, 2, 4, 1.5, formula="deepspeed") == 8
    assert moe.capacity(10, 2, 4, 1.5, formula="tutel") == 8           # 2 * floor(1.5 * 3)
    assert moe.capacity(10, 2, 4, 1.5, formula="megablocks") == 7      # floor(7.5)
    assert moe.capacity(10, 2, 4, 1.5, min_capacity=9, align=4) == 12
    assert moe.capacity(0, 1, 4, 1.0) == 0 and moe.capacity(0, 1, 4, 1.0, min_capacity=3, align=2) == 4
    # exact factors of other types
    assert moe.capacity(3, 1, 1, fractions.Fraction(1, 3)) == 1
    assert moe.capacity(100, 1, 1, decimal.Decimal("1.1")) == 110
    assert moe.capacity(7, 1, 2, 2) == 7


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(T=-1), ValueError, "T"), (dict(E=0), ValueError, "E"), (dict(k=0), ValueError, "k"),
    (dict(k=9), ValueError, "k"), (dict(factor=0.0), ValueError, "factor"), (dict(factor=-1), ValueError, "factor"),
    (dict(factor=math.nan), ValueError, "factor"), (dict(factor=math.inf), ValueError, "factor"),
    (dict(factor="1"), TypeError, "factor"), (dict(factor=True), TypeError, "factor"),
    (dict(min_capacity=-1), ValueError, "min_capacity"), (dict(align=0), ValueError, "align"),
    (dict(formula="gshard"), ValueError, "formula"), (dict(T=1.0), TypeError, "T"), (dict(exact=1), TypeError, "exact"),
])
def test_capacity_bad_inputs(kwargs, error, match):
    args = dict(T=10, k=2, E=8, factor=1.0) | kwargs
    with pytest.raises(error, match=match):
        moe.capacity(**args)


# ---- shared helpers -----------------------------------------------------------------------------------

import commkernels  # noqa: E402

DTYPES = ("float32", "float64", "float16", "bfloat16")
EPS = {"float64": 2.0**-52}  # the accumulation's unit roundoff (float32 for every other dtype)


def eps(dtype: str) -> float:
    return EPS.get(dtype, 2.0**-23)


def to_framework(a: np.ndarray, dtype: str, framework: str):
    t = torch.from_numpy(np.ascontiguousarray(a)).to(getattr(torch, dtype))
    return t.numpy() if framework == "numpy" else t


def f64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().to(torch.float64).numpy()
    return np.asarray(a).astype(np.float64)


@st.composite
def float_matrices(draw, max_T=300, max_E=80, finite=True):
    dtype = draw(st.sampled_from(DTYPES))
    framework = "torch" if dtype == "bfloat16" else draw(st.sampled_from(["numpy", "torch"]))
    T = draw(st.one_of(st.integers(0, 8), st.integers(0, max_T)))
    E = draw(st.one_of(st.integers(1, 20), st.integers(1, max_E)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "wide", "ties"]))
    if kind == "normal":
        x = rng.standard_normal((T, E))
    elif kind == "wide":
        x = rng.standard_normal((T, E)) * draw(st.sampled_from([5.0, 30.0]))
    else:  # few distinct values: ties inside rows, and identical rows
        x = rng.integers(-2, 3, (T, E)) * 0.5
    return to_framework(x, dtype, framework), dtype, framework


def softmax_of(x, dtype, framework):
    p = ref.softmax_rows(f64(x))
    return to_framework(p, dtype, framework)


# ---- load_balancing_loss ------------------------------------------------------------------------------

@given(float_matrices(), st.data(), st.booleans())
def test_load_balancing_loss_matches_reference(case, data, first):
    x, dtype, framework = case
    probs = softmax_of(x, dtype, framework)
    T, E = probs.shape
    k = data.draw(st.integers(1, E))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    ids_np = np.stack([rng.permutation(E)[:k] for _ in range(T)]) if T else np.zeros((0, k), np.int64)
    ids_np = ids_np.astype(data.draw(st.sampled_from([np.int32, np.int64])))
    ids = ids_np if framework == "numpy" else torch.from_numpy(ids_np)
    got = moe.load_balancing_loss(probs, ids, E, first_choice_only=first)
    assert type(got) is type(probs) and tuple(got.shape) == ()
    assert str(got.dtype).endswith("float64" if dtype == "float64" else "float32")
    want = ref.load_balancing_loss(f64(probs), ids_np, E, first)
    # probs >= 0: each P_i is summed in blocks of <= 256 rows (accumulation dtype), then in float64, so its
    # relative error is at most 256 u; the loss adds the final rounding
    assert abs(float(got) - want) <= (256 + 4) * eps(dtype) * abs(want) + 1e-300


def test_load_balancing_loss_values_and_gradient():
    # T = 4, E = 2, k = 1: tokens 0, 1, 2 -> expert 0, token 3 -> expert 1
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]], dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([[0], [0], [0], [1]])
    loss = moe.load_balancing_loss(probs, ids)
    P = probs.detach().mean(0)
    assert torch.allclose(loss, 2 * (0.75 * P[0] + 0.25 * P[1]), rtol=1e-15)
    loss.backward()
    assert torch.equal(probs.grad, torch.tensor([[2 * 0.75 / 4, 2 * 0.25 / 4]] * 4, dtype=torch.float64))
    # Megatron-Core's switch_load_balancing_loss_func (coefficient 1), written as its source does
    probs2 = torch.softmax(torch.randn(64, 8, dtype=torch.float64), dim=1)
    ids2 = torch.topk(probs2, 2, dim=1).indices
    tokens_per_expert = torch.bincount(ids2.reshape(-1), minlength=8)
    megatron = torch.sum(probs2.sum(dim=0) * tokens_per_expert) * (8 / (64 * 64 * 2))
    assert torch.allclose(moe.load_balancing_loss(probs2, ids2), megatron, rtol=1e-13)
    # Tutel's gshard loss counts the first choice only
    mask1 = torch.nn.functional.one_hot(ids2[:, 0], 8).to(torch.float64)
    tutel = torch.sum(probs2.sum(0) * mask1.sum(0)) * (8 / (64 * 64))
    assert torch.allclose(moe.load_balancing_loss(probs2, ids2, first_choice_only=True), tutel, rtol=1e-13)


def test_load_balancing_loss_gradcheck():
    probs = torch.rand(13, 6, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 6, (13, 3), dtype=torch.int32)
    for first in (False, True):
        assert torch.autograd.gradcheck(lambda p: moe.load_balancing_loss(p, ids, first_choice_only=first), (probs,))


# ---- z_loss -------------------------------------------------------------------------------------------

def z_tolerance(x64: np.ndarray, dtype: str, want: float) -> float:
    """exp and log are within 2 ulp; the row sum of E terms adds E roundings; lse = max + log(sum)."""
    if x64.shape[0] == 0:
        return 0.0
    u = eps(dtype)
    lse = np.abs(ref.logsumexp_rows(x64))
    delta = (x64.shape[1] + 6) * u + 2 * u * lse  # absolute error of each lse
    return float(np.mean(2 * lse * delta + delta**2)) + 2 * u * abs(want)


@given(float_matrices())
def test_z_loss_matches_reference(case):
    x, dtype, framework = case
    got = moe.z_loss(x)
    assert type(got) is type(x) and tuple(got.shape) == ()
    want = ref.z_loss(f64(x))
    assert abs(float(got) - want) <= z_tolerance(f64(x), dtype, want)


@given(float_matrices(max_T=60, max_E=40))
def test_z_loss_gradient_matches_reference(case):
    x, dtype, framework = case
    xt = torch.as_tensor(x).clone().requires_grad_(True)
    moe.z_loss(xt).backward()
    x64 = f64(x)
    lse = ref.logsumexp_rows(x64)
    T = x64.shape[0]
    want = (2.0 / T) * lse[:, None] * ref.softmax_rows(x64) if T else np.zeros_like(x64)
    assert xt.grad.dtype == xt.dtype and xt.grad.shape == xt.shape
    if T == 0:
        return
    u = eps(dtype)
    u_out = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24, "float64": 2.0**-53}[dtype]
    tiny = {"float16": 2.0**-25, "bfloat16": 2.0**-134, "float32": 2.0**-150, "float64": 2.0**-1075}[dtype]
    delta = ((x64.shape[1] + 6) * u + 2 * u * np.abs(lse))[:, None]  # each lse's absolute error
    # grad = (2/T lse_t) * exp(x - lse_t): the factor carries delta / |lse| + 2u, the exponent's argument
    # delta + u |x - lse| (exp's own error 2u), the product and the cast u + u_out; exp flushes below
    # e^-87 and the output dtype below its smallest subnormal
    rel = delta + u * np.abs(x64 - lse[:, None]) + 6 * u + u_out
    atol = (2.0 / T) * (delta * ref.softmax_rows(x64) + np.abs(lse)[:, None] * 2.0**-125 * (dtype != "float64")) + tiny
    assert np.all(np.abs(f64(xt.grad) - want) <= rel * np.abs(want) + atol)


def test_z_loss_gradcheck_and_non_finite():
    x = torch.randn(9, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(moe.z_loss, (x,))
    rows = torch.tensor([[0.0, -math.inf], [-math.inf, -math.inf], [1.0, math.inf], [math.nan, 0.0]])
    lse = torch.logsumexp(rows, dim=1)
    for i in range(4):
        got = moe.z_loss(rows[i:i + 1])
        want = lse[i] ** 2
        assert (math.isnan(got) and math.isnan(want)) or float(got) == float(want)
    assert float(moe.z_loss(np.zeros((0, 4), np.float32))) == 0.0
    # Megatron-Core's z_loss_func (coefficient 1)
    y = torch.randn(100, 16)
    assert torch.allclose(moe.z_loss(y), torch.mean(torch.square(torch.logsumexp(y, dim=-1))), rtol=1e-5)


# ---- update_expert_bias_ ------------------------------------------------------------------------------

@given(st.integers(1, 4), st.integers(1, 70), st.sampled_from(["int32", "int64", "float32", "float64"]),
       st.sampled_from(["numpy", "torch"]), st.floats(-1.0, 1.0, allow_nan=False), st.integers(0, 2**32 - 1))
def test_update_expert_bias_matches_reference(rows, E, count_dtype, framework, rate, seed):
    rng = np.random.default_rng(seed)
    counts_np = rng.integers(0, 5, (rows, E)).astype(count_dtype)  # few values: many counts equal the mean
    if rng.random() < 0.3:
        counts_np[:] = counts_np[:, :1]  # a balanced row: no update
    bias_np = rng.standard_normal((rows, E)).astype(np.float32)
    shape = (E,) if rows == 1 and rng.random() < 0.5 else (rows, E)
    bias = to_framework(bias_np.reshape(shape), "float32", framework)
    counts = counts_np.reshape(shape) if framework == "numpy" else torch.from_numpy(counts_np.reshape(shape))
    before = f64(bias).copy()
    out = moe.update_expert_bias_(bias, counts, rate)
    assert out is bias
    sign = np.sign(ref.update_expert_bias(np.zeros(shape), counts_np.reshape(shape), 1.0))
    want = (before.astype(np.float32) + np.float32(rate) * sign.astype(np.float32)).astype(np.float32)
    np.testing.assert_array_equal(f64(bias), want.astype(np.float64))
    np.testing.assert_allclose(f64(bias), ref.update_expert_bias(before, counts_np.reshape(shape), rate), atol=1e-6)


def test_update_expert_bias_matches_megatron():
    counts = torch.tensor([[3.0, 1.0, 2.0, 2.0], [0.0, 0.0, 8.0, 0.0]])
    bias = torch.randn(2, 4)
    megatron = bias + torch.sign(counts.sum(-1, keepdim=True) / 4 - counts) * 1e-3
    assert torch.equal(moe.update_expert_bias_(bias.clone(), counts, 1e-3), megatron)


# ---- expert_choice ------------------------------------------------------------------------------------

def key_tolerance(x64: np.ndarray, u: float) -> float:
    """Absolute error bound of log-probability keys computed with unit roundoff u: (x - max) and log(sum)
    each within a few roundings of their magnitudes, and the sum of E exponentials within E + 4 roundings."""
    if x64.size == 0:
        return 0.0
    spread = float(np.max(np.abs(x64 - x64.max(axis=1, keepdims=True)))) + math.log(x64.shape[1]) + 1
    return (x64.shape[1] + 8) * u + 4 * u * spread


def check_expert_choice(x, capacity, result, u):
    weights, ids = result
    x64 = f64(x)
    T, E = x64.shape
    assert tuple(ids.shape) == (E, capacity) == tuple(weights.shape)
    assert str(ids.dtype).endswith("int32")
    ids = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids).astype(np.int64)
    logp = np.log(ref.softmax_rows(x64)) if T else np.zeros((0, E))
    # ours and the float64 reference's own log-probabilities each carry their rounding
    tol = 2 * (key_tolerance(x64, u) + key_tolerance(x64, 2.0**-52))
    for e in range(E):
        chosen = ids[e]
        assert len(set(chosen.tolist())) == capacity and (capacity == 0 or (chosen.min() >= 0 and chosen.max() < T))
        if capacity == 0:
            continue
        lp = logp[chosen, e]
        assert np.all(np.diff(lp) <= tol)  # best first, up to rounding
        rest = np.setdiff1d(np.arange(T), chosen)
        if rest.size:
            assert lp.min() >= logp[rest, e].max() - tol  # nobody left out is better, up to rounding
        # exact ties (identical rows give identical keys): the lower token index first, and an identical row
        # with a lower index is never passed over
        rows = [tuple(x64[t]) for t in range(T)]
        for a in range(capacity):
            for b in range(a + 1, capacity):
                if rows[chosen[a]] == rows[chosen[b]]:
                    assert chosen[a] < chosen[b]
        for t in chosen:
            assert all(s in chosen for s in range(t) if rows[s] == rows[t])
    w64 = f64(weights)
    if capacity and T:
        want = np.exp(np.take_along_axis(logp.T, ids, axis=1))
        # weights: exp of the key (2 ulp), flushed to 0 below e^-87 in float32
        np.testing.assert_allclose(w64, want, rtol=tol + 4 * u, atol=2.0**-125 if u > 2.0**-52 else 1e-300)


@given(float_matrices(max_T=200, max_E=40), st.data())
def test_expert_choice_matches_reference(case, data):
    x, dtype, framework = case
    T = x.shape[0]
    capacity = data.draw(st.integers(0, T))
    got = moe.expert_choice(x, capacity)
    assert type(got.weights) is type(x)
    assert str(got.weights.dtype).endswith("float64" if dtype == "float64" else "float32")
    check_expert_choice(x, capacity, got, eps(dtype))
    # numpy and torch inputs give the same bits
    other = moe.expert_choice(torch.as_tensor(x) if framework == "numpy" else x, capacity)
    assert np.array_equal(np.asarray(other.token_ids), np.asarray(got.token_ids))


def test_expert_choice_exact_cases():
    # identical rows: every expert takes the first C tokens in token order
    x = np.tile(np.array([[0.5, -1.0, 2.0]], np.float32), (10, 1))
    got = moe.expert_choice(x, 4)
    np.testing.assert_array_equal(got.token_ids, np.tile(np.arange(4), (3, 1)))
    # well-separated log-probabilities (two experts: expert 0's depends on x0 - x1 alone): the reference
    # selection and order exactly
    rng = np.random.default_rng(3)
    y = np.zeros((40, 2), np.float32)
    y[:, 0] = rng.permutation(40) * 0.37 - 7
    want_w, want_ids = ref.expert_choice(y, 9)
    got = moe.expert_choice(y, 9)
    np.testing.assert_array_equal(got.token_ids, want_ids)
    np.testing.assert_allclose(got.weights, want_w, rtol=1e-5, atol=1e-30)
    # NaN ranks above every number; C = 0 and T = 0
    z = np.zeros((5, 2), np.float32)
    z[3, 0] = np.nan
    assert moe.expert_choice(z, 1).token_ids[0, 0] == 3
    assert moe.expert_choice(z, 0).token_ids.shape == (2, 0)
    empty = moe.expert_choice(np.zeros((0, 3), np.float32), 0)
    assert empty.weights.shape == (3, 0) and empty.token_ids.shape == (3, 0)


def test_expert_choice_gradcheck():
    x = torch.randn(12, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: moe.expert_choice(s, 4).weights, (x,))
    y = torch.randn(30, 4, dtype=torch.float32, requires_grad=True)
    w = moe.expert_choice(y, 7).weights
    g = torch.randn_like(w)
    (w * g).sum().backward()
    y2 = y.detach().clone().requires_grad_(True)
    S = torch.softmax(y2, dim=1)
    ids = moe.expert_choice(y.detach(), 7).token_ids.long()
    (S.T.gather(1, ids) * g).sum().backward()
    torch.testing.assert_close(y.grad, y2.grad)


def test_deterministic_whatever_the_thread_count():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((20_000, 64)).astype(np.float32)
    p = ref.softmax_rows(x).astype(np.float32)
    ids = np.argsort(-p, axis=1)[:, :4].astype(np.int32)
    before, results = commkernels.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            commkernels.set_num_threads(threads)
            ec = moe.expert_choice(x, 1000)
            results.append((moe.load_balancing_loss(p, ids).tobytes(), moe.z_loss(x).tobytes(),
                            ec.weights.tobytes(), ec.token_ids.tobytes()))
    finally:
        commkernels.set_num_threads(before)
    assert results[0] == results[1] == results[2]


def test_inputs_are_not_modified():
    x = torch.randn(50, 8)
    ids = torch.randint(0, 8, (50, 2))
    saved = x.clone(), ids.clone()
    moe.load_balancing_loss(torch.softmax(x, 1), ids)
    moe.z_loss(x)
    moe.expert_choice(x, 10)
    assert torch.equal(x, saved[0]) and torch.equal(ids, saved[1])


# ---- torch ops ----------------------------------------------------------------------------------------

ops = torch.ops.commkernels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
def test_opcheck(dtype):
    x = torch.randn(17, 6).to(dtype)
    ids = torch.randint(0, 6, (17, 2), dtype=torch.int32)
    for requires_grad in (False, True):
        xg = x.clone().requires_grad_(requires_grad)
        torch.library.opcheck(ops.moe_load_balancing_loss.default, (xg, ids, False))
        torch.library.opcheck(ops.moe_z_loss.default, (xg,))
        torch.library.opcheck(ops.moe_expert_choice.default, (xg, 5))
    torch.library.opcheck(ops.moe_update_expert_bias_.default, (torch.zeros(6), torch.arange(6), 0.1))


def test_compile_fullgraph():
    def step(logits, ids, bias, counts):
        probs = torch.softmax(logits, dim=1)
        loss = moe.load_balancing_loss(probs, ids) + 1e-3 * moe.z_loss(logits)
        ec = moe.expert_choice(logits, 8)
        moe.update_expert_bias_(bias, counts, 0.01)
        return loss, ec.weights.sum()

    logits, ids = torch.randn(32, 4), torch.randint(0, 4, (32, 2))
    counts = torch.bincount(ids.reshape(-1), minlength=4)
    b1, b2 = torch.zeros(4), torch.zeros(4)
    want = step(logits, ids, b1, counts)
    got = torch.compile(step, fullgraph=True, backend="eager")(logits, ids, b2, counts)
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1]) and torch.equal(b1, b2)


# ---- bad inputs ---------------------------------------------------------------------------------------

def test_bad_inputs_name_the_argument():
    p = np.full((4, 3), 1 / 3, np.float32)
    ids = np.zeros((4, 2), np.int32)
    cases = [
        (lambda: moe.load_balancing_loss(p[0], ids), ValueError, "probs"),
        (lambda: moe.load_balancing_loss(p.astype(np.int32), ids), TypeError, "probs"),
        (lambda: moe.load_balancing_loss(p, ids.astype(np.float32)), TypeError, "ids"),
        (lambda: moe.load_balancing_loss(p, ids[:3]), ValueError, "ids"),
        (lambda: moe.load_balancing_loss(p, ids + 3), ValueError, "ids"),
        (lambda: moe.load_balancing_loss(p, ids - 1), ValueError, "ids"),
        (lambda: moe.load_balancing_loss(p, torch.from_numpy(ids)), TypeError, "ids"),
        (lambda: moe.load_balancing_loss(p, ids, 4), ValueError, "num_experts"),
        (lambda: moe.load_balancing_loss(p, ids.T.copy().T), ValueError, "ids"),
        (lambda: moe.load_balancing_loss(np.zeros((4, 0), np.float32), ids), ValueError, "probs"),
        (lambda: moe.load_balancing_loss(p, ids, first_choice_only=1), TypeError, "first_choice_only"),
        (lambda: moe.z_loss(np.zeros(5, np.float32)), ValueError, "logits"),
        (lambda: moe.z_loss(p.T), ValueError, "logits"),
        (lambda: moe.z_loss([[1.0]]), TypeError, "logits"),
        (lambda: moe.expert_choice(p, 5), ValueError, "capacity"),
        (lambda: moe.expert_choice(p, -1), ValueError, "capacity"),
        (lambda: moe.expert_choice(p, 1.0), TypeError, "capacity"),
        (lambda: moe.expert_choice(p[0], 1), ValueError, "scores"),
        (lambda: moe.update_expert_bias_(np.zeros(3), np.zeros(3, np.int64), 0.1), TypeError, "bias"),
        (lambda: moe.update_expert_bias_(np.zeros(3, np.float32), np.zeros(4, np.int64), 0.1), ValueError, "counts"),
        (lambda: moe.update_expert_bias_(np.zeros(3, np.float32), np.zeros(3, np.int8), 0.1), TypeError, "counts"),
        (lambda: moe.update_expert_bias_(np.zeros(3, np.float32), np.zeros(3, np.int64), math.nan), ValueError, "rate"),
        (lambda: moe.update_expert_bias_(np.zeros(3, np.float32), np.zeros(3, np.int64), "0.1"), TypeError, "rate"),
        (lambda: moe.update_expert_bias_(np.zeros(3, np.float32)[::-1], np.zeros(3, np.int64), 0.1), ValueError, "bias"),
    ]
    for fn, error, name in cases:
        with pytest.raises(error, match=name):
            fn()
    readonly = np.zeros(3, np.float32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="bias"):
        moe.update_expert_bias_(readonly, np.zeros(3, np.int64), 0.1)


def test_empty_tokens():
    for dtype in (torch.float32, torch.bfloat16):
        probs = torch.zeros(0, 4, dtype=dtype, requires_grad=True)
        loss = moe.load_balancing_loss(probs, torch.zeros(0, 2, dtype=torch.int64))
        assert loss.item() == 0.0
        loss.backward()
        assert probs.grad.shape == (0, 4)
        logits = torch.zeros(0, 4, dtype=dtype, requires_grad=True)
        z = moe.z_loss(logits)
        assert z.item() == 0.0
        z.backward()
        assert logits.grad.shape == (0, 4)


# ---- CUDA == CPU --------------------------------------------------------------------------------------

def test_cuda_matches_cpu(device):
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        x = torch.randn(3000, 40, generator=g).to(dtype)
        xd = x.to(device)
        ids = torch.topk(x.float(), 4, dim=1).indices
        p = torch.softmax(x.float(), 1).to(dtype)
        torch.testing.assert_close(moe.load_balancing_loss(p.to(device), ids.to(device)).cpu(),
                                   moe.load_balancing_loss(p, ids), rtol=1e-5, atol=0)
        torch.testing.assert_close(moe.z_loss(xd).cpu(), moe.z_loss(x), rtol=1e-5, atol=0)
        got, want = moe.expert_choice(xd, 300), moe.expert_choice(x, 300)
        if dtype != torch.float64:  # the same keys bit for bit: the same tokens in the same order
            assert torch.equal(got.token_ids.cpu(), want.token_ids)
            assert torch.equal(got.weights.cpu(), want.weights)
    bias, counts = torch.zeros(3, 40), torch.randint(0, 9, (3, 40))
    bd = bias.to(device)
    moe.update_expert_bias_(bd, counts.to(device), 0.01)
    assert torch.equal(bd.cpu(), moe.update_expert_bias_(bias, counts, 0.01))


def test_row_groups_and_single_rows_agree():
    """Few experts: rows go through the 16-rows-at-once loop; alone, through the per-row one. Same bits."""
    for E in (1, 5, 16, 37, 127, 128, 200):
        x = torch.randn(100, E) * 3
        x[7, 0] = -math.inf
        lse_all = ops.moe_z_loss(x)[1]
        lse_one = torch.cat([ops.moe_z_loss(x[t:t + 1])[1] for t in range(100)])
        assert torch.equal(lse_all, lse_one), E


def test_avx512_and_baseline_builds_agree(run_python):
    """The AVX-512 and the baseline row loops compute the same bits (no contraction in either)."""
    script = ("import hashlib, numpy as np; from commkernels import moe;"
              "x = np.random.default_rng(7).standard_normal((3000, 37)).astype(np.float32) * 4;"
              "ec = moe.expert_choice(x, 200);"
              "data = moe.z_loss(x).tobytes() + ec.weights.tobytes() + ec.token_ids.tobytes();"
              "print(hashlib.sha256(data).hexdigest())")
    avx512, baseline = (run_python(script, avx512) for avx512 in (True, False))
    assert avx512 == baseline and avx512.strip()
