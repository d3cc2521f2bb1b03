"""The torch.library custom ops behind commkernels.compress: opcheck, torch.compile, autograd."""

from __future__ import annotations

import pytest
import torch

from commkernels import compress

ops = torch.ops.commkernels


def distinct(shape, dtype, device="cpu", requires_grad=False, seed=0):
    """Values with distinct, well separated magnitudes (so a small perturbation never changes a selection)."""
    g = torch.Generator().manual_seed(seed)
    n = torch.Size(shape).numel()
    magnitude = (torch.randperm(n, generator=g) + 1).to(torch.float64) * 0.25
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
    x = (magnitude * sign).reshape(shape).to(dtype=dtype, device=device)
    return x.requires_grad_(requires_grad)


FLOATS = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


# ---- opcheck -------------------------------------------------------------------------------------------

def topk_samples(device):
    for dtype in FLOATS:
        for requires_grad in (False, True):
            yield distinct((3, 5), dtype, device, requires_grad), 4
    yield distinct((7,), torch.float32, device, True), 0
    yield distinct((7,), torch.float32, device, True), 7


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_opcheck_topk(device, dtype):
    for x, k in topk_samples(device):
        if x.dtype == dtype:
            torch.library.opcheck(ops.topk.default, (x, k))


@pytest.mark.parametrize("grad_dtype, residual_dtype", [
    (torch.float32, torch.float32), (torch.float64, torch.float64), (torch.bfloat16, torch.float32),
    (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float32), (torch.float16, torch.float16)], ids=str)
def test_opcheck_ef_topk(device, grad_dtype, residual_dtype):
    for shape, k in (((4, 6), 5), ((10,), 0), ((10,), 10)):
        grad = distinct(shape, grad_dtype, device, seed=1)
        residual = distinct(shape, residual_dtype, device, seed=2)
        torch.library.opcheck(ops.ef_topk_.default, (grad, residual, k))


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_opcheck_randk(device, dtype):
    for requires_grad in (False, True):
        x = distinct((5, 8), dtype, device, requires_grad)
        for k, seed, step, unbiased in ((6, 1, 2, True), (6, -1, -(2**63), False), (0, 3, 4, True), (40, 5, 6, True)):
            torch.library.opcheck(ops.randk.default, (x, k, seed, step, unbiased))


def test_opcheck_randk_indices(device):
    like = torch.zeros(3, device=device)
    for size, k, seed, step in ((100, 10, 1, 2), (2**31 - 1, 5, -7, 2**62), (0, 0, 0, 0), (17, 17, 3, 3)):
        torch.library.opcheck(ops.randk_indices.default, (like, size, k, seed, step))


# ---- torch.compile -------------------------------------------------------------------------------------

def communication_step(x, grad, residual):
    top = compress.topk(x, 5)
    ef = compress.ef_topk_(grad, residual, 5)
    rand = compress.randk(x, 5, 123, 7)
    return top.values, top.indices, ef.values, ef.indices, rand.values, rand.indices


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_matches_eager(backend):
    torch._dynamo.reset()
    x, grad = distinct((6, 7), torch.float32, seed=3), distinct((6, 7), torch.float32, seed=4)
    residual = distinct((6, 7), torch.float32, seed=5)
    residual_eager, residual_compiled = residual.clone(), residual.clone()
    expected = communication_step(x, grad, residual_eager)
    compiled = torch.compile(communication_step, fullgraph=True, backend=backend)
    got = compiled(x, grad, residual_compiled)
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert torch.equal(residual_compiled, residual_eager)
    # and the same again on the compiled graph, with the updated residual
    expected = communication_step(x, grad, residual_eager)
    got = compiled(x, grad, residual_compiled)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    assert torch.equal(residual_compiled, residual_eager)


def test_compile_fullgraph_new_sizes_and_k():
    # A second size makes dynamo recompile with dynamic shapes; k may depend on the size.
    torch._dynamo.reset()

    def select(x):
        top = compress.topk(x, x.numel() // 4)
        rand = compress.randk(x, x.numel() // 4, 5, 6)
        return top.values, top.indices, rand.values, rand.indices

    compiled = torch.compile(select, fullgraph=True, backend="aot_eager")
    for n in (12, 20, 36, 36, 8):
        x = distinct((n,), torch.float32, seed=n)
        for a, b in zip(compiled(x), select(x)):
            assert torch.equal(a, b)


def test_compile_fullgraph_topk_backward():
    torch._dynamo.reset()

    def loss(x):
        return (compress.topk(x, 3).values ** 2).sum()

    x = distinct((4, 4), torch.float32, requires_grad=True, seed=6)
    loss(x).backward()
    expected, x.grad = x.grad.clone(), None
    torch.compile(loss, fullgraph=True, backend="aot_eager")(x).backward()
    assert torch.equal(x.grad, expected)


# ---- autograd ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, k", [((12,), 5), ((3, 4), 1), ((3, 4), 12), ((2, 3, 2), 0)])
def test_gradcheck_topk(device, shape, k):
    x = distinct(shape, torch.float64, device, requires_grad=True, seed=7)
    assert torch.autograd.gradcheck(lambda x: compress.topk(x, k).values, (x,))


@pytest.mark.parametrize("shape, k, unbiased", [((12,), 5, True), ((3, 4), 3, False), ((3, 4), 12, True),
                                                ((2, 3, 2), 0, True)])
def test_gradcheck_randk(device, shape, k, unbiased):
    x = distinct(shape, torch.float64, device, requires_grad=True, seed=8)
    assert torch.autograd.gradcheck(lambda x: compress.randk(x, k, 9, 10, unbiased=unbiased).values, (x,))


def test_topk_gradient_lands_on_the_selected_entries():
    x = torch.tensor([[1.0, -5.0], [3.0, 0.5]], requires_grad=True)
    msg = compress.topk(x, 2)
    (msg.values * torch.tensor([10.0, 100.0])).sum().backward()
    assert x.grad.tolist() == [[0.0, 10.0], [100.0, 0.0]]


def test_randk_gradient_is_scaled():
    x = torch.arange(1.0, 9.0, requires_grad=True)
    msg = compress.randk(x, 2, 0, 0)
    msg.values.sum().backward()
    expected = torch.zeros(8)
    expected[msg.indices.long()] = 4.0
    assert torch.equal(x.grad, expected)
