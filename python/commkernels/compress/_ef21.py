"""EF21 top-k: the worker step of EF21 (Richtarik, Sokolov, Fatkhullin 2021) and of MASHA2."""

from __future__ import annotations

from .. import _backend, _checks, _torch_ops
from ._sparse import _MAX_SIZE, SparseMsg


def _ef21_kernel(grad, state, scratch, k: int):
    values, indices = _backend.empty(state, k), _backend.empty(state, k, "int32")
    _backend.module(grad).ef21_topk(grad, state, scratch, k, values, indices, _backend.stream(grad))
    return values, indices


def _ef21_fake(grad, state, scratch, k):
    return state.new_empty(k), state.new_empty(k, dtype=_torch_ops.torch.int32)


_ef21_op = _torch_ops.define(
    "ef21_topk_", "(Tensor grad, Tensor(a!) state, Tensor(b!) scratch, int k) -> (Tensor, Tensor)",
    _ef21_kernel, _ef21_fake, mutates_args=("state", "scratch"))


def ef21_topk_(grad, state, k: int, scratch=None) -> SparseMsg:
    """EF21 with top-k, updating ``state`` in place: c = topk(grad - state, k); state += c; returns c.

    The receiver keeps its own copy of every worker's state and applies the same update from the message
    (``state += decompress(c)``), so both sides track g_i; a server averages the states, not the messages.
    d = grad - state is formed in float32 (float64 for float64) and rounded once to the state's dtype; the
    message values are those entries of d (state's dtype), and each sent entry of the state becomes
    state + d, added in float32 (float64) and rounded to the state's dtype. Ties and NaN as ``topk``.

    Two passes, not one (see csrc/compress/ef21_cpu.cpp): d is written into ``scratch`` and top-k selects
    from it. Pass ``scratch`` (a contiguous array like ``state``: same number of elements, dtype,
    framework and device) to reuse one buffer step after step; by default a new one is allocated per call.
    Its contents afterwards are d.

    grad: float32, float64, float16 or bfloat16. state: float32, or grad's dtype; same number of
    elements, framework and device as grad; contiguous. k: 0 <= k <= number of elements.
    """
    _checks.float_array(grad, "grad")
    _checks.float_array(state, "state")
    _checks.writable(state, "state")
    _checks.same_place(grad, state, "grad", "state")
    size = _checks.integer(_backend.numel(grad), "grad.size", 0, _MAX_SIZE)
    if _backend.numel(state) != size:
        raise ValueError(f"state: expected {size} elements like grad, got {_backend.numel(state)}")
    gdt, sdt = _backend.dtype_name(grad), _backend.dtype_name(state)
    if sdt != gdt and (sdt != "float32" or gdt == "float64"):
        raise TypeError(f"state: expected float32 or grad's dtype {gdt}, got {sdt}")
    k = _checks.integer(k, "k", 0, size)
    if scratch is None:
        scratch = _backend.empty(state, size)
    else:
        _checks.same_place(state, scratch, "state", "scratch")
        _checks.contiguous(scratch, "scratch")
        _checks.writable(scratch, "scratch")
        if _backend.dtype_name(scratch) != sdt:
            raise TypeError(f"scratch: expected dtype {sdt} like state, got {_backend.dtype_name(scratch)}")
        if _backend.numel(scratch) != size:
            raise ValueError(f"scratch: expected {size} elements like state, got {_backend.numel(scratch)}")
        if not _backend.is_compiling() and (_shares_memory(scratch, state) or _shares_memory(scratch, grad)):
            raise ValueError("scratch: must not overlap grad or state")
    op = _ef21_op if _backend.is_torch(grad) else _ef21_kernel
    values, indices = op(grad, state, scratch, k)
    return SparseMsg(values, indices, size)


def _shares_memory(a, b) -> bool:
    if _backend.is_torch(a):
        if _backend.numel(a) == 0 or _backend.numel(b) == 0:
            return False
        start_a, start_b = a.data_ptr(), b.data_ptr()
        end_a = start_a + a.numel() * a.element_size()
        end_b = start_b + b.numel() * b.element_size()
        return start_a < end_b and start_b < end_a
    import numpy as np

    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return bool(np.shares_memory(a, b))
    return False
