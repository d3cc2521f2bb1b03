"""The eager fast path of aggregate.mean, buffer_add_ and fedasync_mix_ (plain CPU torch tensors call the
kernel without the torch.library dispatcher, see commkernels/_eager.py): the same bits as the op, the
version counter bumped like the op's, and every other call (autograd, bad arguments) still on the op path."""

from __future__ import annotations

import pytest
import torch

import commkernels
from commkernels import aggregate as A

DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def _op_mean(X):
    return torch.ops.commkernels.mean([X], True, None)


@pytest.mark.parametrize("dtype", DTYPES)
def test_eager_mean_matches_the_op(dtype):
    X = torch.randn(7, 3, 1001, generator=torch.Generator().manual_seed(0)).to(dtype)
    out = A.mean(X)
    assert out.dtype == dtype and out.shape == (3, 1001)
    assert torch.equal(out, _op_mean(X))
    rows = list(X)
    assert torch.equal(A.mean(rows, weights=[1, 2, 3, 4, 5, 6, 7]),
                       torch.ops.commkernels.mean(rows, False, [1.0, 2, 3, 4, 5, 6, 7]))


def test_mean_with_grad_still_differentiates():
    X = torch.randn(5, 40, dtype=torch.float64, requires_grad=True)
    A.mean(X).sum().backward()
    assert torch.allclose(X.grad, torch.full_like(X, 0.2))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["buffer_add_", "fedasync_mix_"])
def test_eager_inplace_matches_the_op_and_bumps_the_version(name, dtype):
    g = torch.Generator().manual_seed(1)
    target, source = torch.randn(3001, generator=g).to(dtype), torch.randn(3001, generator=g).to(dtype)
    expected = target.clone()
    getattr(torch.ops.commkernels, name)(expected, source, 0.3)
    version = target._version
    assert getattr(A, name)(target, source, 0.3) is target
    assert torch.equal(target, expected)
    assert target._version > version


def test_eager_inplace_is_seen_by_autograd():
    """An in-place update of a tensor saved for backward must make backward fail, as with any in-place op."""
    w = torch.randn(10, requires_grad=True)
    buf = torch.randn(10)
    y = (w * buf).sum()  # saves buf
    A.buffer_add_(buf, torch.ones(10), 1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_eager_inplace_bad_arguments_still_named():
    with pytest.raises(ValueError, match="update"):
        A.buffer_add_(torch.zeros(4), torch.zeros(5))
    with pytest.raises(TypeError, match="buffer"):
        A.buffer_add_(torch.zeros(4, dtype=torch.bfloat16), torch.zeros(4))
    x = torch.zeros(8)
    with pytest.raises(ValueError, match="overlap"):
        A.fedasync_mix_(x[:4], x[2:6], 0.5)
    with pytest.raises(ValueError, match="alpha"):
        A.fedasync_mix_(torch.zeros(4), torch.zeros(4), 1.5)
    same = torch.ones(4)
    A.buffer_add_(same, same, 1.0)  # the same memory exactly is allowed: elementwise
    assert torch.equal(same, torch.full((4,), 2.0))


def test_large_results_from_the_host_cache_are_never_shared():
    """A result of 8 MiB or more comes from the host buffer cache: a live one is never handed out again,
    and a dead one's memory serves the next result of that size, fully rewritten."""
    g = torch.Generator().manual_seed(3)
    X, Y = torch.randn(8, 2_200_000, generator=g), torch.randn(8, 2_200_000, generator=g)
    commkernels.release_cached_memory()
    a = A.mean(X)
    assert a.numel() * 4 >= commkernels._backend.POOL_MIN_BYTES
    b = A.mean(Y)
    assert a.data_ptr() != b.data_ptr()
    assert torch.equal(a, _op_mean(X)) and torch.equal(b, _op_mean(Y))
    ptr = a.data_ptr()
    del a
    c = A.mean(2 * X)
    assert c.data_ptr() == ptr and torch.equal(c, _op_mean(2 * X))
    del b, c
    assert commkernels.release_cached_memory() >= 2 * 2_200_000 * 4
