"""Sparse aggregation: many workers' SparseMsgs summed (or averaged) into one dense array."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import _backend, _checks, _torch_ops
from ._sparse import SparseMsg

_MAX_SIZE = (1 << 31) - 1


def _host_views(arrays) -> list:
    """CPU torch tensors as zero-copy NumPy views, which cross into C++ cheaper than through torch's
    Python-level ``__dlpack__`` (microseconds each, times two per message); bfloat16 (not in NumPy),
    CUDA tensors and other frameworks' arrays as they are."""
    return [a.numpy() if _backend.is_torch(a) and a.device.type == "cpu" and a.dtype != _torch_ops.torch.bfloat16
            else a for a in arrays]


def _sparse_aggregate_kernel(values, indices, size: int, average: bool):
    like = values[0]
    out = _backend.output_buffer(like, size)
    if _backend.framework(like, "msgs[0].values") == "jax":
        values, indices = [np.asarray(v) for v in values], [np.asarray(i) for i in indices]
    _backend.module(out).sparse_aggregate(_host_views(values), _host_views(indices), size, average,
                                          _host_views([out])[0], _backend.stream(out))
    return _backend.finish(like, out)


def _sparse_aggregate_fake(values, indices, size, average):
    return values[0].new_empty(size)


_sparse_aggregate_op = _torch_ops.define(
    "sparse_aggregate", "(Tensor[] values, Tensor[] indices, int size, bool average) -> Tensor",
    _sparse_aggregate_kernel, _sparse_aggregate_fake)


def _sparse_aggregate_out_kernel(values, indices, size: int, average: bool, out) -> None:
    _backend.module(out).sparse_aggregate(_host_views(values), _host_views(indices), size, average,
                                          _host_views([out.reshape(-1)])[0], _backend.stream(out))


def _sparse_aggregate_out_fake(values, indices, size, average, out) -> None:
    return None


_sparse_aggregate_out_op = _torch_ops.define(
    "sparse_aggregate_out", "(Tensor[] values, Tensor[] indices, int size, bool average, Tensor(a!) out) -> ()",
    _sparse_aggregate_out_kernel, _sparse_aggregate_out_fake, mutates_args=("out",))


def _torch_messages(msgs, size: int):
    """(values, indices) of messages that are all torch tensors of one float dtype and one index dtype on
    one device, contiguous, of `size` elements and matching lengths: the common case, recognised in one
    cheap sweep. None otherwise, and the caller runs the full checks (which name what is wrong)."""
    first = msgs[0]
    if not isinstance(first, SparseMsg) or not _backend.is_torch(first.values):
        return None
    torch = _torch_ops.torch
    value_dtype, index_dtype, device = first.values.dtype, first.indices.dtype, first.values.device
    if value_dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16) or \
            index_dtype not in (torch.int32, torch.int64):
        return None
    values, indices = [], []
    for msg in msgs:
        if type(msg) is not SparseMsg:
            return None
        v, i, msg_size = msg
        if not (isinstance(v, torch.Tensor) and isinstance(i, torch.Tensor) and type(msg_size) is int
                and msg_size == size and v.dtype == value_dtype and i.dtype == index_dtype and v.device == device
                and i.device == device and v.is_contiguous() and i.is_contiguous() and v.numel() == i.numel()):
            return None
        values.append(v.reshape(-1))
        indices.append(i.reshape(-1))
    return values, indices


def _checked_messages(msgs, size: int):
    """(values, indices) of the messages, every field checked (TypeError/ValueError naming it)."""
    first = msgs[0]
    values, indices = [], []
    for m, msg in enumerate(msgs):
        if not isinstance(msg, SparseMsg):
            raise TypeError(f"msgs[{m}]: expected a SparseMsg, got {type(msg).__name__}")
        v, i, msg_size = msg
        _checks.float_array(v, f"msgs[{m}].values")
        _checks.same_place(first.values, v, "msgs[0].values", f"msgs[{m}].values")
        _checks.same_place(v, i, f"msgs[{m}].values", f"msgs[{m}].indices")
        _checks.contiguous(i, f"msgs[{m}].indices")
        if _checks.integer(msg_size, f"msgs[{m}].size") != size:
            raise ValueError(f"msgs[{m}].size: expected {size}, got {msg_size}")
        value_dtype, index_dtype = _backend.dtype_name(v), _backend.dtype_name(i)
        if m == 0:
            first_value_dtype, first_index_dtype = value_dtype, index_dtype
        if value_dtype != first_value_dtype:
            raise TypeError(f"msgs[{m}].values: expected {first_value_dtype} like msgs[0], got {value_dtype}")
        if index_dtype not in _backend.INDEX_DTYPES:
            raise TypeError(f"msgs[{m}].indices: expected int32 or int64, got {index_dtype}")
        if index_dtype != first_index_dtype:
            raise TypeError(f"msgs[{m}].indices: expected {first_index_dtype} like msgs[0], got {index_dtype}")
        if _backend.numel(v) != _backend.numel(i):
            raise ValueError(f"msgs[{m}]: {_backend.numel(v)} values but {_backend.numel(i)} indices")
        values.append(v.reshape(-1))
        indices.append(i.reshape(-1))
    return values, indices


def sparse_aggregate(msgs: Sequence[SparseMsg], size: int, average: bool = False, out=None):
    """The dense sum (``average``: the mean) of the messages: sum_m decompress(msgs[m]), divided by len(msgs).

    Deterministic, without atomics: each output element is added up in message order (msgs[0] first) in
    float32 (float64 for float64 values), then rounded once to the output dtype, which is the messages'
    values dtype. One pass over the output: each output chunk (CPU thread / CUDA tile) binary-searches its
    first entry in every message and walks them in step.

    msgs: a non-empty sequence of SparseMsg of ``size`` elements each, all in one framework, on one device,
    with one values dtype and one index dtype (int32 or int64); indices strictly ascending in [0, size)
    (ValueError otherwise: checked by the kernel, which on CUDA reads one flag back).
    out (optional): a contiguous, writable array of ``size`` elements, same framework, device and dtype as
    the values, overwritten and returned (a fresh large output costs page faults on first touch: reuse one
    across steps).
    Returns a 1-D array of ``size`` elements in the messages' framework and device (or ``out``).
    """
    if isinstance(msgs, SparseMsg) or not isinstance(msgs, Sequence) or len(msgs) == 0:
        raise TypeError("msgs: expected a non-empty sequence of SparseMsg")
    size = _checks.integer(size, "size", 0, _MAX_SIZE)
    first = msgs[0]
    checked = _torch_messages(msgs, size)
    values, indices = checked if checked is not None else _checked_messages(msgs, size)
    average = bool(average)
    if out is not None:
        _checks.same_place(first.values, out, "msgs[0].values", "out")
        _checks.contiguous(out, "out")
        _checks.writable(out, "out")
        if _backend.dtype_name(out) != _backend.dtype_name(first.values):
            raise TypeError(f"out: expected dtype {_backend.dtype_name(first.values)}, got {_backend.dtype_name(out)}")
        if _backend.numel(out) != size:
            raise ValueError(f"out: expected {size} elements, got {_backend.numel(out)}")
        if _backend.is_torch(out):
            _sparse_aggregate_out_op(values, indices, size, average, out)
        else:
            _sparse_aggregate_out_kernel(values, indices, size, average, out)
        return out
    if _backend.is_torch(first.values):
        return _sparse_aggregate_op(values, indices, size, average)
    return _sparse_aggregate_kernel(values, indices, size, average)
