"""The eager fast path for plain torch tensors: the kernel called without the torch.library dispatcher.

Small calls (MoE routing, planning and balancing losses at inference sizes; aggregate.mean, buffer_add_
and fedasync_mix_ on cache-sized vectors) take tens of microseconds, where a custom op's trip through the
dispatcher (~10 us, more with autograd and in-place bookkeeping) and ``Tensor.__dlpack__`` (Python, ~1.8 us
per array handed to nanobind) cost as much as the kernel. When nothing traces, transforms or intercepts the
call (no torch.compile, no fake, dispatch or torch-function mode, no functorch transform, no jit trace,
plain CPU tensors (``plain_cpu``; ``plain`` also lets CUDA ones through, for callers that pass the backend
module and the current stream as the op does), and, for a differentiable op, no input that autograd would
record), the custom op would call the very same kernel: the fast path calls it directly, handing the
arrays over as DLPack capsules (``to_dlpack``, C, 0.2 us). Everything else still goes through the ``commkernels::<name>`` op. An in-place
kernel called this way bumps the tensor's version counter itself (``mutated``), as the op would.
"""

from __future__ import annotations

from . import _torch_ops

torch = _torch_ops.torch
if torch is not None:
    from torch.utils.dlpack import to_dlpack as _to_dlpack


def plain_cpu(*tensors, differentiable=()) -> bool:
    """True when calling the CPU kernel directly is exactly what the custom op would do. tensors: torch
    tensors or None; differentiable: those among them whose gradient autograd would track."""
    return _plain(tensors, differentiable, cuda=False)


def plain(*tensors, differentiable=()) -> bool:
    """plain_cpu, with CUDA tensors allowed too: for callers that hand the kernel the arrays' backend module
    and the caller's current stream, as the op does (aggregate's rules: ~50 us a call saved on an H100's
    host, where a small rule's kernels take a few)."""
    return _plain(tensors, differentiable, cuda=True)


def _plain(tensors, differentiable, cuda: bool) -> bool:
    if torch.compiler.is_compiling():  # first: torch.compile must not trace the torch._C queries below
        return False
    C = torch._C
    for t in tensors:
        if t is not None and (type(t) is not torch.Tensor or not (t.is_cpu or (cuda and t.is_cuda))):
            return False
    if (C._are_functorch_transforms_active() or C._len_torch_dispatch_stack() or C._get_tracing_state() is not None
            or C._is_torch_function_mode_enabled()):
        return False
    if differentiable and torch.is_grad_enabled():
        return not any(t is not None and t.requires_grad for t in differentiable)
    return True


def mutated(*tensors) -> None:
    """What a mutating op does for autograd: bump the version counters of the tensors written in place."""
    torch.autograd.graph.increment_version(tensors)


def dl(t):
    """A DLPack capsule for a tensor (None stays None): nanobind's cheapest way in."""
    return None if t is None else _to_dlpack(t)


# ---- argument checks that only ever say "all fine" ------------------------------------------------------
# Each returns a truthy value only when the public function's full checks would pass; on anything else the
# caller runs those checks, which raise the usual error naming the argument. So the common call skips the
# general (framework-generic, ~5-8 us) checks without weakening any of them.

_MAX = (1 << 31) - 1
if torch is not None:
    FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
    _INDEX = (torch.int32, torch.int64)


def float_matrix(x):
    """(T, E) for a plain contiguous CPU torch float tensor [T, E] with E >= 1 and T * E < 2^31, else None."""
    if (torch is None or type(x) is not torch.Tensor or not x.is_cpu or x.dtype not in FLOATS or x.dim() != 2
            or not x.is_contiguous()):
        return None
    T, E = x.shape
    return (T, E) if E >= 1 and T * E <= _MAX else None


def index_matrix(ids):
    """(T, k) for a plain contiguous CPU torch int32/int64 tensor [T, k] with k >= 1, else None."""
    if (torch is None or type(ids) is not torch.Tensor or not ids.is_cpu or ids.dtype not in _INDEX
            or ids.dim() != 2 or not ids.is_contiguous()):
        return None
    T, k = ids.shape
    return (T, k) if k >= 1 else None


def small_int(value, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def index_vector(ids, T: int) -> bool:
    """Whether ids is a plain contiguous CPU torch int32/int64 tensor [T]."""
    return (torch is not None and type(ids) is torch.Tensor and ids.is_cpu and ids.dtype in _INDEX and ids.dim() == 1
            and ids.shape[0] == T and ids.is_contiguous())
