"""commkernels.moe's eager fast path (plain CPU torch tensors call the kernel without the dispatcher): the same
results as the commkernels:: ops, and the ops still seen whenever something traces or intercepts."""

from __future__ import annotations

import pytest
import torch
from _dispatch_recorder import Recorder

from commkernels import moe

ops = torch.ops.commkernels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_route_and_plan_match_the_ops(dtype):
    torch.manual_seed(0)
    logits = torch.randn(300, 24).to(dtype)
    bias = torch.randn(24)
    for kwargs, args in ((dict(), ("softmax", False, True, None, 0, 0, 1.0)),
                         (dict(score="sigmoid", bias=bias, n_group=4, topk_group=2, scale=2.0),
                          ("sigmoid", False, True, bias.double() if dtype == torch.float64 else bias, 4, 2, 2.0))):
        w, i = moe.route(logits, 4, **kwargs)
        ow, oi = ops.moe_route.default(logits, 4, *args)
        assert torch.equal(w, ow) and torch.equal(i, oi) and w.dtype == ow.dtype and i.dtype == torch.int32
    for kwargs, args in ((dict(), (-1, False, 1, None)), (dict(capacity=40, align=8), (40, False, 8, None)),
                         (dict(capacity=30, drop_policy="score", weights=w), (30, True, 1, w))):
        p = moe.plan(i, 24, **kwargs)
        want = ops.moe_plan.default(i, 24, *args)
        got = (p.counts, p.offsets, p.row_of, p.src_of, p.block_expert)
        for a, b in zip(got, want):
            assert (a is None and b.numel() == 0) or torch.equal(a, b)


def test_the_ops_are_seen_when_something_intercepts():
    logits = torch.randn(16, 8)
    with Recorder() as rec:
        w, i = moe.route(logits, 2)
        moe.plan(i, 8)
    assert any("moe_route" in n for n in rec.names) and any("moe_plan" in n for n in rec.names)
    lg = logits.clone().requires_grad_()
    w, _ = moe.route(lg, 2)
    assert w.grad_fn is not None
    w.sum().backward()
    assert lg.grad is not None
    with torch.no_grad():
        assert moe.route(lg, 2)[0].grad_fn is None


def test_bad_torch_inputs_still_named():
    with pytest.raises(ValueError, match="ids"):
        moe.plan(torch.tensor([[0, 9]], dtype=torch.int32), 5)
    with pytest.raises(ValueError, match="k"):
        moe.route(torch.zeros(3, 4), 5)
    with pytest.raises(TypeError, match="bias"):
        moe.route(torch.zeros(3, 4), 2, bias=torch.zeros(4, dtype=torch.int32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_balance_and_expert_choice_match_the_ops(dtype):
    torch.manual_seed(1)
    logits = torch.randn(200, 16).to(dtype)
    probs = torch.softmax(logits.float(), dim=1).to(dtype)
    ids = torch.topk(logits.float(), 3, dim=1).indices
    for first in (False, True):
        got = moe.load_balancing_loss(probs, ids, first_choice_only=first)
        want = ops.moe_load_balancing_loss.default(probs, ids, first)[0]
        assert got.shape == () and got.dtype == want.dtype and torch.equal(got, want)
    got, want = moe.z_loss(logits), ops.moe_z_loss.default(logits)[0]
    assert got.shape == () and got.dtype == want.dtype and torch.equal(got, want)
    got, want = moe.expert_choice(logits, 25), ops.moe_expert_choice.default(logits, 25)
    assert torch.equal(got.weights, want[0]) and torch.equal(got.token_ids, want[1])
    lg = logits.clone().requires_grad_()
    moe.z_loss(lg).backward()  # requires grad: through the op and its backward
    assert lg.grad is not None and lg.grad.shape == lg.shape


def test_fast_checks_fall_back_to_the_named_errors():
    x = torch.randn(6, 8)
    with pytest.raises(ValueError, match="logits"):
        moe.z_loss(torch.randn(6, 16)[:, ::2])  # not contiguous
    with pytest.raises(ValueError, match="ids"):
        moe.load_balancing_loss(torch.softmax(x, 1), torch.zeros(5, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="ids"):
        moe.load_balancing_loss(torch.softmax(x, 1), torch.full((6, 2), 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="num_experts"):
        moe.load_balancing_loss(torch.softmax(x, 1), torch.zeros(6, 2, dtype=torch.int64), num_experts=7)
    with pytest.raises(ValueError, match="capacity"):
        moe.expert_choice(x, 7)
    with pytest.raises(TypeError, match="capacity"):
        moe.expert_choice(x, 2.0)
    with pytest.raises(ValueError, match="scale"):
        moe.route(x, 2, scale=float("inf"))
    with pytest.raises(TypeError, match="renormalize"):
        moe.route(x, 2, renormalize=1)
    with pytest.raises(ValueError, match="order"):
        moe.route(x, 2, order="middle")
    with pytest.raises(ValueError, match="capacity"):
        moe.plan(torch.zeros(4, 2, dtype=torch.int32), 3, capacity=-2)
    with pytest.raises(TypeError, match="num_experts"):
        moe.plan(torch.zeros(4, 2, dtype=torch.int32), 3.0)
    with pytest.raises(ValueError, match="weights"):
        moe.plan(torch.zeros(4, 2, dtype=torch.int32), 3, capacity=1, drop_policy="score")
    # integer-valued scale and numpy ints take the general path: same results
    w1, i1 = moe.route(x, 2, scale=2)
    w2, i2 = moe.route(x, 2, scale=2.0)
    assert torch.equal(w1, w2) and torch.equal(i1, i2)


def test_serial_and_split_passes_keep_the_bits():
    # small passes run without a second thread, a large expert choice over few experts splits its experts
    # between threads: the same bits whatever the thread count
    import commkernels

    torch.manual_seed(2)
    cases = [torch.randn(20_000, 8), torch.randn(700, 6), torch.randn(9000, 8)]
    before, results = commkernels.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            commkernels.set_num_threads(threads)
            out = []
            for x in cases:
                ec = moe.expert_choice(x, x.shape[0] // 4)
                ids = torch.topk(x, 2, dim=1).indices
                out += [ec.weights, ec.token_ids, moe.z_loss(x), moe.load_balancing_loss(torch.softmax(x, 1), ids)]
            results.append(out)
    finally:
        commkernels.set_num_threads(before)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


def test_torch_function_modes_see_the_ops():
    from torch.overrides import TorchFunctionMode

    class Names(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.names.append(str(func))
            return func(*args, **(kwargs or {}))

    logits = torch.randn(16, 8)
    with Names():
        w, i = moe.route(logits, 2)
        p = moe.plan(i, 8)
    assert torch.equal(p.counts.sum(), torch.tensor(32))
