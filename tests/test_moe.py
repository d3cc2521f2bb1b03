"""commkernels.moe route / plan / permute / combine against the NumPy references, invariants, autograd,
torch.library checks, determinism and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import commkernels
from commkernels import moe
from commkernels.reference import moe as ref

DTYPES = ("float32", "float64", "float16", "bfloat16")
EXPERTS = (1, 2, 3, 6, 8, 60, 64, 144, 160, 256, 384, 1024)
EPS = {"float32": 2.0**-24, "float64": 2.0**-53, "float16": 2.0**-11, "bfloat16": 2.0**-8}


def f64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().to(torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


def np_(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def make(values: np.ndarray, dtype: str, framework: str):
    t = torch.from_numpy(np.ascontiguousarray(values)).to(getattr(torch, dtype))
    return t.numpy() if framework == "numpy" else t


# ---- route --------------------------------------------------------------------------------------------

@st.composite
def route_cases(draw):
    experts = draw(st.one_of(st.sampled_from(EXPERTS), st.integers(1, 300)))
    tokens = draw(st.integers(0, 24 if experts <= 300 else 6))
    dtype = draw(st.sampled_from(DTYPES))
    framework = "torch" if dtype == "bfloat16" else draw(st.sampled_from(["numpy", "torch"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "ties", "wide"]))
    if kind == "normal":
        values = rng.standard_normal((tokens, experts))
    elif kind == "ties":  # many equal logits: ties must go to the lower id
        values = rng.integers(-3, 4, (tokens, experts)) * 0.5
    else:
        values = rng.standard_normal((tokens, experts)) * 30
    logits = make(values, dtype, framework)
    score = draw(st.sampled_from(["softmax", "sigmoid", "sqrtsoftplus"]))
    groups = [g for g in range(1, experts + 1) if experts % g == 0]
    n_group = draw(st.one_of(st.none(), st.sampled_from(groups)))
    topk_group = None if n_group is None else draw(st.integers(1, n_group))
    limit = experts if n_group is None else topk_group * (experts // n_group)
    k = draw(st.one_of(st.integers(1, min(limit, 9)), st.just(limit)))
    use_bias = draw(st.booleans())
    bias = None
    if use_bias:
        b = rng.standard_normal(experts) * draw(st.sampled_from([0.01, 1.0]))
        bias = make(b, "float32", framework)
    order = "post" if score == "softmax" and not use_bias and n_group is None and draw(st.booleans()) else "pre"
    kwargs = dict(score=score, order=order, renormalize=draw(st.booleans()), bias=bias, n_group=n_group,
                  topk_group=topk_group, scale=draw(st.sampled_from([1.0, 2.5])))
    return logits, k, kwargs, dtype


@given(route_cases())
def test_route_matches_reference(case):
    logits, k, kwargs, dtype = case
    weights, ids = moe.route(logits, k, **kwargs)
    tokens, experts = logits.shape
    assert type(weights) is type(logits) and type(ids) is type(logits)
    assert tuple(weights.shape) == (tokens, k) and tuple(ids.shape) == (tokens, k)
    assert str(weights.dtype).endswith("float64" if dtype == "float64" else "float32")
    assert str(ids.dtype).endswith("int32")
    x = f64(logits)
    ref_kwargs = dict(kwargs, bias=None if kwargs["bias"] is None else f64(kwargs["bias"]))
    want_w, want_ids, keys, groups = ref.route(x, k, details=True, **ref_kwargs)
    got_ids = np_(ids).astype(np.int64)
    # Scores in float32 (float64) carry a relative error of at most (E + 8) ulps (exp, a sum of E terms, a
    # division): the kernel may order two keys differently from the float64 reference only when they lie
    # that close. Without bias and groups the key is the logit itself: the ids must match exactly.
    acc_eps = EPS["float64" if dtype == "float64" else "float32"]
    exact = kwargs["bias"] is None and kwargs["n_group"] is None
    for t in range(tokens):
        if np.array_equal(got_ids[t], want_ids[t]):
            continue
        assert not exact, (t, got_ids[t], want_ids[t])
        tol = 4 * (experts + 16) * acc_eps * (1 + np.abs(keys[t]).max())
        near = np.diff(keys[t][:k + 1]).size and np.abs(np.diff(keys[t][:k + 1])).min() <= tol
        if kwargs["n_group"] is not None:
            gaps = np.abs(np.diff(groups[t][:kwargs["topk_group"] + 1]))
            near = near or (gaps.size and gaps.min() <= 2 * tol)
        assert near, (t, got_ids[t], want_ids[t], keys[t][:k + 1])
    assert all(len(set(row)) == k for row in got_ids.tolist())
    want_w = ref.route_weights(x, got_ids, kwargs["score"], kwargs["order"], kwargs["renormalize"], kwargs["scale"])
    # each weight: exp of l - max (rounded: |l - max| ulps of the exponent), a sum over at most E terms, a
    # division: (E + 8 + 2 max |l|) ulps relative
    spread = 2 * np.abs(x).max(axis=1, keepdims=True) if tokens else 0
    rtol = (experts + 8 + spread) * acc_eps
    tiny = np.finfo(np.float64 if dtype == "float64" else np.float32).tiny  # exp underflows below it
    assert (np.abs(f64(weights) - want_w) <= rtol * np.abs(want_w) + 4 * tiny * kwargs["scale"]).all()


def test_route_known_values():
    logits = np.array([[1.0, 3.0, 3.0, 2.0, -1.0, 0.0]], np.float32)
    w, i = moe.route(logits, 2)
    np.testing.assert_array_equal(i, [[1, 2]])  # the tie goes to the lower id
    np.testing.assert_allclose(w, [[0.5, 0.5]])
    w, i = moe.route(logits, 3, renormalize=False)
    p = np.exp(logits[0] - 3) / np.exp(logits[0] - 3).sum()
    np.testing.assert_allclose(w[0], p[[1, 2, 3]], rtol=1e-6)
    # DeepSeek-V3: the bias picks, the unbiased score weighs
    bias = np.array([10, 0, 0, 0, 0, 0], np.float32)
    w, i = moe.route(logits, 2, score="sigmoid", bias=bias)
    np.testing.assert_array_equal(i, [[0, 1]])
    s = 1 / (1 + np.exp(-logits[0, [0, 1]].astype(np.float64)))
    np.testing.assert_allclose(w[0], s / s.sum(), rtol=1e-6)
    # excluded groups are -inf, not 0: negative keys in the kept group still beat the excluded experts
    neg = np.array([[-5.0, -6.0, 9.0, 8.0]], np.float32)
    gbias = np.array([-3.0, -3.0, -10.0, -10.0], np.float32)  # group 0 keys ~ -3, group 1 keys ~ -9
    _, i = moe.route(neg, 2, score="sigmoid", bias=gbias, n_group=2, topk_group=1)
    np.testing.assert_array_equal(i, [[0, 1]])


def test_route_gradcheck():
    torch.manual_seed(0)
    configs = [dict(), dict(renormalize=False), dict(order="post"), dict(score="sigmoid"),
               dict(score="sigmoid", renormalize=False, scale=2.5), dict(score="sqrtsoftplus"),
               dict(score="sigmoid", bias=torch.randn(12, dtype=torch.float64), n_group=4, topk_group=2),
               dict(bias=torch.randn(12, dtype=torch.float64) * 0.01, renormalize=False)]
    for kwargs in configs:
        x = torch.randn(5, 12, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: moe.route(t, 3, **kwargs)[0], (x,)), kwargs


def test_route_grad_low_precision_matches_float32():
    x = torch.randn(7, 20).to(torch.bfloat16).float()  # the same logits in both dtypes
    g = torch.randn(7, 4)
    grads = []
    for dtype in (torch.float32, torch.bfloat16):
        t = x.to(dtype).detach().requires_grad_()
        (moe.route(t, 4, score="sigmoid")[0] * g).sum().backward()
        grads.append(t.grad.float())
        assert t.grad.dtype == dtype
    # float32 math in both: the bfloat16 gradient is the float32 one rounded once
    torch.testing.assert_close(grads[1], grads[0], rtol=2**-8, atol=0)


# ---- plan ---------------------------------------------------------------------------------------------

@st.composite
def plan_cases(draw):
    experts = draw(st.integers(1, 12))
    tokens = draw(st.integers(0, 40))
    k = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    framework = draw(st.sampled_from(["numpy", "torch"]))
    skew = draw(st.booleans())  # skewed routings overflow the capacity of the popular experts
    p = rng.dirichlet(np.ones(experts) * (0.3 if skew else 5))
    ids = rng.choice(experts, size=(tokens, k), p=p).astype(draw(st.sampled_from(["int32", "int64"])))
    capacity = draw(st.one_of(st.none(), st.integers(0, 12)))
    policy = draw(st.sampled_from(["position", "score"]))
    weights = rng.integers(0, 4, (tokens, k)) / 4.0  # many equal weights: ties go to the earlier pair
    weights = weights.astype(draw(st.sampled_from(["float32", "float64"])))
    align = draw(st.sampled_from([1, 1, 2, 3, 4, 8]))
    if framework == "torch":
        ids, weights = torch.from_numpy(ids), torch.from_numpy(weights)
    return ids, experts, dict(capacity=capacity, drop_policy=policy, align=align, weights=weights)


@given(plan_cases())
def test_plan_matches_reference(case):
    ids, experts, kwargs = case
    p = moe.plan(ids, experts, **kwargs)
    want = ref.plan(np_(ids), experts, kwargs["capacity"], kwargs["drop_policy"], kwargs["align"],
                    np_(kwargs["weights"]))
    for name in ("counts", "offsets", "row_of", "src_of"):
        got = getattr(p, name)
        assert type(got) is type(ids)
        assert str(got.dtype).endswith("int64" if name in ("counts", "offsets") else "int32"), name
        np.testing.assert_array_equal(np_(got), want[name], err_msg=name)
    if kwargs["align"] > 1:
        np.testing.assert_array_equal(np_(p.block_expert), want["block_expert"])
    else:
        assert p.block_expert is None
    tokens, k = ids.shape
    assert p.rows == moe.num_rows(tokens, k, experts, kwargs["capacity"], kwargs["align"])
    # invariants: counts sum to T*k minus the drops; capacity respected; rows and pairs are inverse maps
    row_of = np_(p.row_of).reshape(-1)
    counts = np_(p.counts)
    assert counts.sum() == tokens * k - (row_of < 0).sum()
    if kwargs["capacity"] is None:
        assert (row_of >= 0).all()
    else:
        assert (counts <= kwargs["capacity"]).all()
    src_of = np_(p.src_of)
    kept = np.flatnonzero(row_of >= 0)
    np.testing.assert_array_equal(src_of[row_of[kept]], kept)
    assert (src_of == tokens * k).sum() == p.rows - kept.size


def test_plan_drop_policies_name_the_dropped_slots():
    ids = np.array([[0, 1], [0, 1], [0, 2], [0, 1]], np.int32)
    w = np.array([[0.1, 0.9], [0.7, 0.3], [0.7, 0.3], [0.2, 0.8]], np.float32)
    by_position = moe.plan(ids, 3, capacity=2)
    np.testing.assert_array_equal(by_position.row_of, [[0, 2], [1, 3], [-1, 4], [-1, -1]])
    by_score = moe.plan(ids, 3, capacity=2, drop_policy="score", weights=w)
    # expert 0: weights 0.1, 0.7, 0.7, 0.2 -> tokens 1 and 2 (equal weights: the earlier pair first)
    # expert 1: weights 0.9, 0.3, 0.8 -> tokens 0 and 3, kept in token order
    np.testing.assert_array_equal(by_score.row_of, [[-1, 2], [0, -1], [1, 4], [-1, 3]])
    np.testing.assert_array_equal(by_score.counts, [2, 2, 1])
    np.testing.assert_array_equal(by_score.src_of, [2, 4, 1, 7, 5, 8])


# ---- permute / combine --------------------------------------------------------------------------------

@st.composite
def move_cases(draw):
    tokens, experts, k = draw(st.integers(0, 30)), draw(st.integers(1, 9)), draw(st.integers(1, 4))
    hidden = draw(st.sampled_from([0, 1, 3, 16, 100, 1030, 2100]))
    dtype = draw(st.sampled_from(DTYPES))
    framework = "torch" if dtype == "bfloat16" else draw(st.sampled_from(["numpy", "torch"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ids = rng.integers(0, experts, (tokens, k)).astype(np.int32)
    capacity = draw(st.one_of(st.none(), st.integers(0, 8)))
    align = draw(st.sampled_from([1, 4]))
    wdtype = "float64" if dtype == "float64" else "float32"
    weights = rng.random((tokens, k)).astype(wdtype)
    x = make(rng.standard_normal((tokens, hidden)), dtype, framework)
    if framework == "torch":
        ids, weights = torch.from_numpy(ids), torch.from_numpy(weights)
    return x, moe.plan(ids, experts, capacity=capacity, align=align), weights, dtype


@given(move_cases(), st.booleans())
def test_permute_matches_reference(case, weighted):
    x, p, weights, dtype = case
    out = moe.permute(x, p, weights if weighted else None)
    assert type(out) is type(x) and str(out.dtype) == str(x.dtype) and tuple(out.shape) == (p.rows, x.shape[1])
    want = ref.permute(f64(x), np_(p.src_of), p.k, np_(weights) if weighted else None)
    if weighted:  # one product in float32 (float64), one rounding to the dtype
        np.testing.assert_allclose(f64(out), f64(make(want, dtype, "torch")), rtol=2 * EPS[dtype], atol=0)
    else:
        np.testing.assert_array_equal(f64(out), want)  # a copy: exact


@given(move_cases(), st.booleans())
def test_combine_matches_reference(case, weighted):
    x, p, weights, dtype = case
    y = moe.permute(x, p)
    out = moe.combine(y, p, weights if weighted else None)
    assert type(out) is type(y) and str(out.dtype) == str(y.dtype) and tuple(out.shape) == tuple(x.shape)
    w = np_(weights) if weighted else np.ones(tuple(p.row_of.shape))
    want = ref.combine(f64(y), np_(p.row_of), w)
    # k products and sums in float32 (float64): at most 2k ulps of the sum of |terms|; one rounding to dtype
    acc_eps = EPS["float64" if dtype == "float64" else "float32"]
    magnitude = ref.combine(np.abs(f64(y)), np_(p.row_of), np.abs(w))
    subnormal = {"float16": 2.0**-24, "bfloat16": 2.0**-133, "float32": 2.0**-149, "float64": 2.0**-1074}[dtype]
    bound = 2 * p.k * acc_eps * magnitude + EPS[dtype] * np.abs(want) + subnormal  # rounding into subnormals
    assert (np.abs(f64(out) - want) <= bound).all()


@given(st.integers(0, 40), st.integers(1, 20), st.integers(1, 8), st.sampled_from(DTYPES), st.integers(0, 2**32 - 1))
def test_combine_of_permute_is_k_times_x(tokens, experts, k, dtype, seed):
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.integers(-8, 9, (tokens, 33)).astype(np.float64)).to(getattr(torch, dtype))
    ids = torch.from_numpy(rng.integers(0, experts, (tokens, k)).astype(np.int64))
    p = moe.plan(ids, experts, align=3)
    assert torch.equal(moe.combine(moe.permute(x, p), p), x * k)  # small integers: exact in every dtype


def test_gradcheck_permute_combine():
    torch.manual_seed(1)
    ids = torch.randint(0, 5, (9, 3), dtype=torch.int32)
    for kwargs in (dict(), dict(capacity=3), dict(capacity=4, align=4), dict(align=2)):
        p = moe.plan(ids, 5, **kwargs)
        x = torch.randn(9, 6, dtype=torch.float64, requires_grad=True)
        y = torch.randn(p.rows, 6, dtype=torch.float64, requires_grad=True)
        w = torch.rand(9, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a: moe.permute(a, p), (x,))
        assert torch.autograd.gradcheck(lambda a, b: moe.permute(a, p, b), (x, w))
        assert torch.autograd.gradcheck(lambda a: moe.combine(a, p), (y,))
        assert torch.autograd.gradcheck(lambda a, b: moe.combine(a, p, b), (y, w))
        assert torch.autograd.gradcheck(
            lambda a, b: moe.combine(moe.permute(a, p) * 2, p, moe.route(b, 3)[0]), (x, torch.randn(9, 7, dtype=torch.float64, requires_grad=True)))


def test_bfloat16_grads_flow():
    ids = torch.randint(0, 4, (10, 2))
    p = moe.plan(ids, 4)
    x = torch.randn(10, 8, dtype=torch.bfloat16, requires_grad=True)
    w = torch.rand(10, 2, requires_grad=True)
    moe.combine(moe.permute(x, p), p, w).float().pow(2).sum().backward()
    assert x.grad.dtype == torch.bfloat16 and w.grad.dtype == torch.float32
    assert torch.isfinite(x.grad.float()).all() and (w.grad != 0).any()


def test_deterministic_whatever_the_thread_count():
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((3000, 64)).astype(np.float32)
    x = rng.standard_normal((3000, 300)).astype(np.float32)
    before, results = commkernels.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            commkernels.set_num_threads(threads)
            w, i = moe.route(logits, 6, score="sigmoid", bias=rng.standard_normal(64).astype(np.float32) * 0 + 0.1,
                             n_group=8, topk_group=4)
            p = moe.plan(i, 64, capacity=200, drop_policy="score", weights=w, align=8)
            y = moe.permute(x, p, w)
            out = moe.combine(y, p, w)
            results.append(b"".join(np.asarray(a).tobytes() for a in (w, i, p.row_of, p.src_of, y, out)))
    finally:
        commkernels.set_num_threads(before)
    assert results[0] == results[1] == results[2]


# ---- torch.library ------------------------------------------------------------------------------------

def test_torch_opcheck_and_compile(device):
    logits = torch.randn(16, 12, device=device)
    for dtype in (torch.float32, torch.bfloat16):
        torch.library.opcheck(torch.ops.commkernels.moe_route.default,
                              (logits.to(dtype).requires_grad_(), 3, "softmax", False, True, None, 0, 0, 1.0))
    torch.library.opcheck(torch.ops.commkernels.moe_route.default,
                          (logits, 3, "sigmoid", False, True, torch.randn(12, device=device), 4, 2, 2.0))
    w, ids = moe.route(logits, 3)
    torch.library.opcheck(torch.ops.commkernels.moe_plan.default, (ids, 12, 5, True, 4, w))
    p = moe.plan(ids, 12, capacity=5, align=4)
    x = torch.randn(16, 8, device=device, requires_grad=True)
    wr = w.clone().requires_grad_()
    torch.library.opcheck(torch.ops.commkernels.moe_permute.default, (x, p.src_of, p.row_of, None))
    torch.library.opcheck(torch.ops.commkernels.moe_permute.default, (x, p.src_of, p.row_of, wr))
    y = torch.randn(p.rows, 8, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.commkernels.moe_combine.default, (y, p.row_of, p.src_of, wr))
    torch.library.opcheck(torch.ops.commkernels.moe_pair_dots.default, (x, y, p.row_of, p.src_of, torch.float32))

    def layer(t, l):
        weights, ids = moe.route(l, 3, score="sigmoid")
        plan = moe.plan(ids, 12, align=4)
        return moe.combine(moe.permute(t, plan) * 2, plan, weights)

    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    l = torch.randn(16, 12, device=device, requires_grad=True)
    got, want = compiled(x, l), layer(x, l)
    torch.testing.assert_close(got, want)
    got.sum().backward()


def test_cuda_matches_cpu(device):
    logits = torch.randn(500, 160, device=device)
    bias = torch.randn(160, device=device)
    for kwargs in (dict(), dict(score="sigmoid", bias=bias, n_group=8, topk_group=4)):
        w, i = moe.route(logits, 8, **kwargs)
        wc, ic = moe.route(logits.cpu(), 8, **{k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()})
        assert torch.equal(i.cpu(), ic)
        torch.testing.assert_close(w.cpu(), wc, rtol=1e-5, atol=1e-7)
    for kwargs in (dict(), dict(capacity=20, align=8), dict(capacity=20, drop_policy="score", weights=w)):
        p = moe.plan(i, 160, **kwargs)
        pc = moe.plan(i.cpu(), 160, **{k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()})
        for name in ("counts", "offsets", "row_of", "src_of"):
            assert torch.equal(getattr(p, name).cpu(), getattr(pc, name)), name
        x = torch.randn(500, 256, device=device)
        assert torch.equal(moe.permute(x, p).cpu(), moe.permute(x.cpu(), pc))
        y = torch.randn(p.rows, 256, device=device)
        torch.testing.assert_close(moe.combine(y, p, w).cpu(), moe.combine(y.cpu(), pc, w.cpu()), rtol=1e-5, atol=1e-5)


def test_jax():
    jax = pytest.importorskip("jax")
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((20, 10)).astype(np.float32)
    w, i = moe.route(jax.numpy.asarray(logits), 2)
    assert isinstance(w, jax.Array)
    wn, in_ = moe.route(logits, 2)
    np.testing.assert_array_equal(np.asarray(i), in_)
    p = moe.plan(jax.numpy.asarray(in_), 10)
    x = rng.standard_normal((20, 5)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(moe.combine(moe.permute(jax.numpy.asarray(x), p), p)), 2 * x)


# ---- bad inputs ---------------------------------------------------------------------------------------

def test_bad_inputs():
    logits = np.zeros((4, 6), np.float32)
    with pytest.raises(ValueError, match="k"):
        moe.route(logits, 7)
    with pytest.raises(ValueError, match="k"):
        moe.route(logits, 0)
    with pytest.raises(TypeError, match="logits"):
        moe.route(np.zeros((4, 6), np.int32), 2)
    with pytest.raises(ValueError, match="logits"):
        moe.route(np.zeros(6, np.float32), 2)
    with pytest.raises(ValueError, match="logits"):
        moe.route(np.zeros((4, 12), np.float32)[:, ::2], 2)
    with pytest.raises(ValueError, match="score"):
        moe.route(logits, 2, score="relu")
    with pytest.raises(ValueError, match="order"):
        moe.route(logits, 2, order="post", score="sigmoid")
    with pytest.raises(ValueError, match="n_group"):
        moe.route(logits, 2, n_group=4, topk_group=1)
    with pytest.raises(ValueError, match="n_group"):
        moe.route(logits, 2, n_group=2)
    with pytest.raises(ValueError, match="topk_group"):
        moe.route(logits, 2, n_group=2, topk_group=3)
    with pytest.raises(ValueError, match="k"):
        moe.route(logits, 4, n_group=3, topk_group=1)
    with pytest.raises(ValueError, match="bias"):
        moe.route(logits, 2, bias=np.zeros(5, np.float32))
    with pytest.raises(TypeError, match="bias"):
        moe.route(logits, 2, bias=torch.zeros(6))
    with pytest.raises(ValueError, match="scale"):
        moe.route(logits, 2, scale=float("nan"))
    ids = np.array([[0, 1], [2, 5]], np.int32)
    with pytest.raises(ValueError, match="ids"):
        moe.plan(ids, 5)
    with pytest.raises(ValueError, match="ids"):
        moe.plan(np.array([[0, -1]], np.int64), 5)
    with pytest.raises(TypeError, match="ids"):
        moe.plan(ids.astype(np.float32), 6)
    with pytest.raises(ValueError, match="ids"):
        moe.plan(ids.reshape(-1), 6)
    with pytest.raises(ValueError, match="num_experts"):
        moe.plan(ids, 0)
    with pytest.raises(ValueError, match="capacity"):
        moe.plan(ids, 6, capacity=-1)
    with pytest.raises(ValueError, match="align"):
        moe.plan(ids, 6, align=0)
    with pytest.raises(ValueError, match="drop_policy"):
        moe.plan(ids, 6, capacity=1, drop_policy="random")
    with pytest.raises(ValueError, match="weights"):
        moe.plan(ids, 6, capacity=1, drop_policy="score")
    with pytest.raises(ValueError, match="weights"):
        moe.plan(ids, 6, capacity=1, drop_policy="score", weights=np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="weights"):
        moe.plan(ids, 6, capacity=1, drop_policy="score", weights=np.ones((2, 2), np.float16))
    p = moe.plan(ids, 6)
    with pytest.raises(ValueError, match="x"):
        moe.permute(np.zeros((3, 4), np.float32), p)
    with pytest.raises(TypeError, match="x"):
        moe.permute(np.zeros((2, 4), np.int32), p)
    with pytest.raises(TypeError, match="plan"):
        moe.permute(np.zeros((2, 4), np.float32), (1, 2))
    with pytest.raises(TypeError, match="x"):
        moe.permute(torch.zeros(2, 4), p)
    with pytest.raises(ValueError, match="y"):
        moe.combine(np.zeros((5, 4), np.float32), p)
    with pytest.raises(ValueError, match="weights"):
        moe.combine(np.zeros((4, 4), np.float32), p, np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="weights"):
        moe.combine(np.zeros((4, 4), np.float32), p, np.ones((2, 2), np.int32))
    bad = p._replace(row_of=np.full((2, 2), 9, np.int32))
    with pytest.raises(ValueError, match="row_of"):
        moe.combine(np.zeros((4, 4), np.float32), bad)
    bad = p._replace(src_of=np.full(4, 99, np.int32))
    with pytest.raises(ValueError, match="src_of"):
        moe.permute(np.zeros((2, 4), np.float32), bad)


def test_empty():
    w, i = moe.route(np.zeros((0, 5), np.float32), 2)
    assert w.shape == (0, 2) and i.shape == (0, 2)
    p = moe.plan(np.zeros((0, 2), np.int32), 5, align=4)
    assert p.rows == 15 and (p.counts == 0).all() and (p.offsets == 0).all() and (p.block_expert == -1).all()
    y = moe.permute(np.zeros((0, 3), np.float32), p)
    assert y.shape == (15, 3) and (y == 0).all()
    assert moe.combine(y, p).shape == (0, 3)


def test_out_arguments():
    rng = np.random.default_rng(6)
    ids = rng.integers(0, 5, (30, 2)).astype(np.int32)
    w = rng.random((30, 2)).astype(np.float32)
    for framework in ("numpy", "torch"):
        x = make(rng.standard_normal((30, 17)), "float32", framework)
        ids_f, w_f = (ids, w) if framework == "numpy" else (torch.from_numpy(ids), torch.from_numpy(w))
        p = moe.plan(ids_f, 5, capacity=10, align=4)
        buf = make(np.full((p.rows, 17), 7.0), "float32", framework)  # stale contents are overwritten
        assert moe.permute(x, p, out=buf) is buf
        np.testing.assert_array_equal(np_(buf), np_(moe.permute(x, p)))
        back = make(np.full((30, 17), 7.0), "float32", framework)
        assert moe.combine(buf, p, w_f, out=back) is back
        np.testing.assert_array_equal(np_(back), np_(moe.combine(buf, p, w_f)))
        with pytest.raises(ValueError, match="out"):
            moe.permute(x, p, out=make(np.zeros((p.rows + 1, 17)), "float32", framework))
        with pytest.raises(TypeError, match="out"):
            moe.combine(buf, p, out=make(np.zeros((30, 17)), "float64", framework))
    xt = torch.randn(30, 17, requires_grad=True)
    with pytest.raises(ValueError, match="out"):
        moe.permute(xt, p, out=torch.empty(p.rows, 17))
    with torch.no_grad():
        moe.permute(xt, p, out=torch.empty(p.rows, 17))
    torch.library.opcheck(torch.ops.commkernels.moe_permute_out.default,
                          (xt.detach(), p.src_of, p.row_of, None, torch.empty(p.rows, 17)))


def test_bench_cases_run():
    from commkernels.bench import moe as bench_moe

    cases = bench_moe.cases("cpu", quick=True, sizes=[16])
    kernels = {c.kernel for c in cases}
    assert kernels == {"route", "plan", "permute", "permute.backward", "combine", "combine.backward"}
    assert len([c for c in cases if c.kernel == "route"]) == 16
    for case in cases:
        if case.kernel in ("route", "plan") and case.params["T"] != 512:
            continue
        prepared = case.prepare()
        prepared.ours()
        for fn in prepared.baselines.values():
            fn()
