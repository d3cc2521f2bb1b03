"""Sparse messages: top-k, error-feedback top-k, rand-k, and their decompression."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import _backend, _checks, _torch_ops

_MAX_SIZE = (1 << 31) - 1  # index outputs are int32
_MAX_UINT64 = (1 << 64) - 1


class SparseMsg(NamedTuple):
    """A sparse message: ``values[j]`` belongs at flat position ``indices[j]`` of a ``size``-element array.

    ``indices`` are int32 and strictly ascending; ``values`` have the dtype of what was compressed.
    """

    values: Any
    indices: Any
    size: int


def decompress(msg: SparseMsg, out=None):
    """The dense ``size``-element array of ``msg``: its values at its indices, zero elsewhere.

    Indices are checked to lie in [0, size) (ValueError otherwise; for CUDA arrays the check reads two
    numbers back from the GPU, and under torch.compile it is skipped). The kernels' messages have distinct
    indices; for a hand-made message with repeated ones, which value lands is the framework's choice.
    ``out`` (optional): a contiguous array of ``msg.size`` elements, same framework, device and dtype as
    ``msg.values``, to reuse across steps; it is overwritten and returned.
    """
    values, indices, size = msg
    _checks.same_place(values, indices, "msg.values", "msg.indices")
    if _backend.dtype_name(indices) not in _backend.INDEX_DTYPES:
        raise TypeError(f"msg.indices: expected int32 or int64, got {_backend.dtype_name(indices)}")
    if _backend.numel(values) != _backend.numel(indices):
        raise ValueError(f"msg: {_backend.numel(values)} values but {_backend.numel(indices)} indices")
    size = _checks.integer(size, "msg.size", 0, _MAX_SIZE)
    if _backend.numel(indices) and not _backend.is_compiling():
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= size:
            raise ValueError(f"msg.indices: expected indices in [0, {size}), got values in [{low}, {high}]")
    if out is None:
        out = _backend.output_buffer(values, size)
        if _backend.framework(values, "msg.values") == "jax":  # filled in NumPy, handed back as JAX
            values, indices = np.asarray(values), np.asarray(indices)
    else:
        _checks.same_place(values, out, "msg.values", "out")
        _checks.contiguous(out, "out")
        _checks.writable(out, "out")
        if _backend.dtype_name(out) != _backend.dtype_name(values):
            raise TypeError(f"out: expected dtype {_backend.dtype_name(values)}, got {_backend.dtype_name(out)}")
        if _backend.numel(out) != size:
            raise ValueError(f"out: expected {size} elements, got {_backend.numel(out)}")
    flat = out.reshape(-1)
    if _backend.is_torch(flat):
        flat.zero_()
    else:
        flat.fill(0)
    flat[indices.reshape(-1)] = values.reshape(-1)
    return _backend.finish(msg.values, out)


# ---- top-k --------------------------------------------------------------------------------------------

def _topk_kernel(x, k: int):
    values, indices = _backend.empty(x, k), _backend.empty(x, k, "int32")
    _backend.module(x).topk(x, k, values, indices, _backend.stream(x))
    return _backend.finish(x, values), _backend.finish(x, indices)


def _topk_fake(x, k):
    return x.new_empty(k), x.new_empty(k, dtype=_torch_ops.torch.int32)


# Autograd of ops whose values are x's entries at their indices (topk, threshold): the gradient flows back
# to those entries of x.
def _gather_setup(ctx, inputs, output):
    ctx.shape = inputs[0].shape
    ctx.num_inputs = len(inputs)
    ctx.save_for_backward(output[1])


def _gather_backward(ctx, grad_values, grad_indices):
    (indices,) = ctx.saved_tensors
    grad = grad_values.new_zeros(ctx.shape.numel())
    grad[indices] = grad_values
    return (grad.reshape(ctx.shape),) + (None,) * (ctx.num_inputs - 1)


_topk_op = _torch_ops.define("topk", "(Tensor x, int k) -> (Tensor, Tensor)", _topk_kernel, _topk_fake,
                             backward=_gather_backward, setup_context=_gather_setup)


def topk(x, k: int) -> SparseMsg:
    """The k entries of largest magnitude of x (flattened), as a SparseMsg.

    Exact: ties go to the lower index, and NaN counts as the largest magnitude (NaNs tie with each
    other). A two-pass radix select, not a sort. Differentiable for torch tensors (the gradient flows to
    the selected entries).

    x: float32, float64, float16 or bfloat16, contiguous, fewer than 2^31 elements.
    k: 0 <= k <= x's number of elements.
    """
    _checks.float_array(x, "x")
    size = _checks.integer(_backend.numel(x), "x.size", 0, _MAX_SIZE)
    k = _checks.integer(k, "k", 0, size)
    values, indices = _topk_op(x, k) if _backend.is_torch(x) else _topk_kernel(x, k)
    return SparseMsg(values, indices, size)


# ---- error-feedback top-k -----------------------------------------------------------------------------

def _ef_topk_kernel(grad, residual, k: int):
    values, indices = _backend.empty(residual, k), _backend.empty(residual, k, "int32")
    _backend.module(grad).ef_topk(grad, residual, k, values, indices, _backend.stream(grad))
    return values, indices


def _ef_topk_fake(grad, residual, k):
    return residual.new_empty(k), residual.new_empty(k, dtype=_torch_ops.torch.int32)


_ef_topk_op = _torch_ops.define("ef_topk_", "(Tensor grad, Tensor(a!) residual, int k) -> (Tensor, Tensor)",
                                _ef_topk_kernel, _ef_topk_fake, mutates_args=("residual",))


def ef_topk_(grad, residual, k: int) -> SparseMsg:
    """Top-k with error feedback (EF14), updating ``residual`` in place.

    p = residual + grad (added in float32, float64 for float64); the message is topk(p, k) (values in the
    residual's dtype); afterwards residual = p with the k sent entries set to zero. One fused pass over
    grad and residual, then the select.

    grad: float32, float64, float16 or bfloat16. residual: float32, or grad's dtype; same number of
    elements, framework and device as grad; contiguous. k: 0 <= k <= number of elements.
    """
    size = _checks.grad_and_residual(grad, residual)
    k = _checks.integer(k, "k", 0, size)
    op = _ef_topk_op if _backend.is_torch(grad) else _ef_topk_kernel
    values, indices = op(grad, residual, k)
    return SparseMsg(values, indices, size)


# ---- rand-k -------------------------------------------------------------------------------------------

def _randk_kernel(x, k: int, seed: int, step: int, unbiased: bool):
    values, indices = _backend.empty(x, k), _backend.empty(x, k, "int32")
    seed, step = _torch_ops.to_uint64(seed), _torch_ops.to_uint64(step)
    _backend.module(x).randk(x, k, seed, step, unbiased, values, indices, _backend.stream(x))
    return _backend.finish(x, values), _backend.finish(x, indices)


def _randk_fake(x, k, seed, step, unbiased):
    return x.new_empty(k), x.new_empty(k, dtype=_torch_ops.torch.int32)


def _randk_setup(ctx, inputs, output):
    x, k, _, _, unbiased = inputs
    ctx.shape = x.shape
    ctx.scale = x.numel() / k if unbiased and k > 0 else 1.0
    ctx.save_for_backward(output[1])


def _randk_backward(ctx, grad_values, grad_indices):
    (indices,) = ctx.saved_tensors
    grad = grad_values.new_zeros(ctx.shape.numel())
    grad[indices] = grad_values * ctx.scale
    return grad.reshape(ctx.shape), None, None, None, None


_randk_op = _torch_ops.define("randk", "(Tensor x, int k, int seed, int step, bool unbiased) -> (Tensor, Tensor)",
                              _randk_kernel, _randk_fake, backward=_randk_backward, setup_context=_randk_setup)


def _seed_step(seed, step) -> tuple[int, int]:
    return (_checks.integer(seed, "seed", 0, _MAX_UINT64), _checks.integer(step, "step", 0, _MAX_UINT64))


def randk(x, k: int, seed: int, step: int, unbiased: bool = True) -> SparseMsg:
    """k entries of x (flattened) at the indices ``randk_indices(x.size, k, seed, step)``.

    Values are x[S] * size / k when ``unbiased`` (so E[decompress(msg)] = x over (seed, step)), else x[S].
    O(k) work whatever the size; the same (seed, step) gives the same indices on every backend and every
    worker, so a receiver can regenerate them instead of receiving them.

    seed, step: integers in [0, 2^64). Never touches a framework's global RNG.
    """
    _checks.float_array(x, "x")
    size = _checks.integer(_backend.numel(x), "x.size", 0, _MAX_SIZE)
    k = _checks.integer(k, "k", 0, size)
    seed, step = _seed_step(seed, step)
    unbiased = bool(unbiased)
    if _backend.is_torch(x):
        values, indices = _randk_op(x, k, _torch_ops.to_int64(seed), _torch_ops.to_int64(step), unbiased)
    else:
        values, indices = _randk_kernel(x, k, seed, step, unbiased)
    return SparseMsg(values, indices, size)


def _randk_indices_kernel(like, size: int, k: int, seed: int, step: int):
    indices = _backend.empty(like, k, "int32")
    seed, step = _torch_ops.to_uint64(seed), _torch_ops.to_uint64(step)
    _backend.module(like).randk_indices(size, k, seed, step, indices, _backend.stream(like))
    return _backend.finish(like, indices)


def _randk_indices_fake(like, size, k, seed, step):
    return like.new_empty(k, dtype=_torch_ops.torch.int32)


_randk_indices_op = _torch_ops.define("randk_indices", "(Tensor like, int size, int k, int seed, int step) -> Tensor",
                                      _randk_indices_kernel, _randk_indices_fake)


def randk_indices(size: int, k: int, seed: int, step: int, like=None):
    """The k distinct indices of [0, size), ascending int32, that rand-k keyed (seed, step) selects.

    S = {perm(0), ..., perm(k-1)} for a pseudo-random permutation perm of [0, size) keyed by
    (seed, step): a 4-round Feistel network on ceil(log2 size)-bit words with Philox4x32-10 round
    functions, restricted to [0, size) by cycle walking (csrc/compress/randk.h). O(k) work. ``like`` (optional) is an array whose framework and device the result takes
    (NumPy on the CPU by default).
    """
    size = _checks.integer(size, "size", 0, _MAX_SIZE)
    k = _checks.integer(k, "k", 0, size)
    seed, step = _seed_step(seed, step)
    if like is None:
        like = _backend.empty_on("numpy", "cpu", 0, "int32")
    _backend.framework(like, "like")
    if _backend.is_torch(like):
        return _randk_indices_op(like, size, k, _torch_ops.to_int64(seed), _torch_ops.to_int64(step))
    return _randk_indices_kernel(like, size, k, seed, step)
