"""commkernels.moe combine's fused backward (moe_combine_backward): the same bits as its two separate passes
(a weighted permute of the gradient and the row dot products), for any plan, dtype and thread count, and
the fallback for plans whose row_of and src_of disagree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import commkernels
from commkernels import moe

ops = torch.ops.commkernels
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def two_passes(y, grad, p, w):
    return (ops.moe_permute.default(grad, p.src_of, p.row_of, w),
            ops.moe_pair_dots.default(grad, y, p.row_of, p.src_of, w.dtype))


@st.composite
def cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    tokens, experts, k = draw(st.integers(0, 30)), draw(st.integers(1, 9)), draw(st.integers(1, 4))
    hidden = draw(st.sampled_from([0, 1, 7, 16, 33, 1030]))
    capacity = draw(st.one_of(st.none(), st.integers(0, 12)))
    align = draw(st.integers(1, 4))
    ids = torch.from_numpy(rng.integers(0, experts, (tokens, k)).astype(np.int32))
    p = moe.plan(ids, experts, capacity=capacity, align=align)
    dtype = draw(st.sampled_from(DTYPES))
    wdtype = torch.float64 if dtype == torch.float64 else draw(st.sampled_from([torch.float32, torch.float64]))
    y = torch.from_numpy(rng.standard_normal((p.rows, hidden))).to(dtype)
    grad = torch.from_numpy(rng.standard_normal((tokens, hidden))).to(dtype)
    w = torch.from_numpy(rng.random((tokens, k))).to(wdtype)
    return y, grad, p, w


@given(cases())
def test_fused_backward_is_the_two_passes(case):
    y, grad, p, w = case
    gy, gw = ops.moe_combine_backward.default(y, grad, p.row_of, p.src_of, w)
    want_gy, want_gw = two_passes(y, grad, p, w)
    assert gy.dtype == y.dtype and gw.dtype == w.dtype
    assert torch.equal(gy, want_gy) and torch.equal(gw, want_gw)


def test_autograd_uses_the_fused_pass():
    rng = np.random.default_rng(3)
    ids = torch.from_numpy(rng.integers(0, 6, (50, 3)).astype(np.int32))
    p = moe.plan(ids, 6, capacity=20, align=4)
    y = torch.randn(p.rows, 40, requires_grad=True)
    w = torch.rand(50, 3, requires_grad=True)
    grad = torch.randn(50, 40)
    moe.combine(y, p, w).backward(grad)
    want_gy, want_gw = two_passes(y.detach(), grad, p, w.detach())
    assert torch.equal(y.grad, want_gy) and torch.equal(w.grad, want_gw)
    assert (w.grad == 0).any() and (w.grad != 0).any()  # dropped slots and kept ones


def test_large_streamed_and_thread_count_independent():
    # grad_y of 8 MB and more: huge-page advice and streaming stores; odd rows: unaligned row starts
    rng = np.random.default_rng(4)
    ids = torch.from_numpy(rng.integers(0, 16, (3000, 4)).astype(np.int32))
    p = moe.plan(ids, 16, align=8)
    y = torch.randn(p.rows, 701)
    grad, w = torch.randn(3000, 701), torch.rand(3000, 4, dtype=torch.float64)
    assert y.numel() * 4 >= 8 << 20
    want = two_passes(y, grad, p, w)
    before = commkernels.get_num_threads()
    try:
        for threads in (1, 2, 3):
            commkernels.set_num_threads(threads)
            got = ops.moe_combine_backward.default(y, grad, p.row_of, p.src_of, w)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    finally:
        commkernels.set_num_threads(before)


def test_plans_whose_halves_disagree_and_bad_plans():
    ids = torch.tensor([[0, 1], [1, 0], [2, 2]], dtype=torch.int32)
    p = moe.plan(ids, 3, capacity=2)
    y, grad, w = torch.randn(p.rows, 5), torch.randn(3, 5), torch.rand(3, 2)
    # swap the pairs of two rows in src_of only: grad_y follows src_of, grad_w row_of (as the two passes)
    src = p.src_of.clone()
    src[[0, 1]] = src[[1, 0]]
    swapped = p._replace(src_of=src)
    got, want = ops.moe_combine_backward.default(y, grad, p.row_of, src, w), two_passes(y, grad, swapped, w)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    with pytest.raises(ValueError, match="row_of"):
        ops.moe_combine_backward.default(y, grad, torch.full((3, 2), 99, dtype=torch.int32), p.src_of, w)
    with pytest.raises(ValueError, match="src_of"):
        ops.moe_combine_backward.default(y, grad, p.row_of, torch.full_like(p.src_of, -5), w)


def test_opcheck_and_double_backward():
    ids = torch.randint(0, 4, (7, 2))
    p = moe.plan(ids, 4, capacity=3, align=2)
    y = torch.randn(p.rows, 5, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    w = torch.rand(7, 2, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(ops.moe_combine_backward.default, (y, grad, p.row_of, p.src_of, w))
    assert torch.autograd.gradcheck(lambda a, g, b: ops.moe_combine_backward.default(a, g, p.row_of, p.src_of, b),
                                    (y, grad, w))


def test_large_outputs_reuse_the_host_cache():
    # an 8 MiB+ CPU torch output comes from the cache; when it dies its memory serves the next one
    ids = torch.randint(0, 8, (1024, 2), dtype=torch.int32)
    p = moe.plan(ids, 8)
    x = torch.randn(1024, 1100)
    moe.release_cached_memory()
    y = moe.permute(x, p)
    assert y.numel() * 4 >= commkernels._backend.POOL_MIN_BYTES
    ptr, want = y.data_ptr(), y.clone()
    del y
    y2 = moe.permute(x * 2, p)  # the same size: the same pages, fully rewritten
    assert y2.data_ptr() == ptr and torch.equal(y2, want * 2)
    held = y2.numel() * 4
    del y2
    assert moe.release_cached_memory() >= held and moe.release_cached_memory() == 0
    # an output still alive is never handed out twice
    a, b = moe.permute(x, p), moe.permute(x, p)
    assert a.data_ptr() != b.data_ptr() and torch.equal(a, b)
    a.add_(1)  # an ordinary tensor: in-place ops, views, autograd
    assert torch.equal(a, b + 1)
