"""Picks the compiled module for an array and speaks each framework's dialect.

Arrays reach the kernels zero-copy through DLPack (nanobind's ``nb::ndarray``); outputs are allocated
here, in the caller's framework and on the caller's device, so NumPy in gives NumPy out, torch in gives
torch out and CuPy in gives CuPy out. CUDA kernels run on the caller's current stream.

JAX arrays (on the CPU) are read zero-copy too; JAX arrays are immutable, so a kernel writes into a NumPy
buffer that `finish` hands back as a JAX array (``jax.dlpack.from_dlpack``, which JAX may copy).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import numpy as np

from . import _cpu

if importlib.util.find_spec("commkernels._cuda") is None:
    _cuda = None
    _cuda_missing = ("commkernels was built without its CUDA module (no CUDA compiler at build time, "
                     "or COMMKERNELS_CUDA=OFF): reinstall where nvcc is on PATH")
else:
    from . import _cuda

    _cuda_missing = ""

FLOAT_DTYPES = ("float32", "float64", "float16", "bfloat16")
INDEX_DTYPES = ("int32", "int64")


def _torch():
    return sys.modules.get("torch")


def _cupy():
    return sys.modules.get("cupy")


def _is_jax(a) -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(a, jax.Array)


def framework(a, name: str) -> str:
    """'numpy', 'torch', 'cupy' or 'jax'; TypeError naming `name` for anything else."""
    if isinstance(a, np.ndarray):
        return "numpy"
    torch = _torch()
    if torch is not None and isinstance(a, torch.Tensor):
        return "torch"
    cupy = _cupy()
    if cupy is not None and isinstance(a, cupy.ndarray):
        return "cupy"
    if _is_jax(a):
        platforms = {d.platform for d in a.devices()}
        if platforms != {"cpu"} or len(a.devices()) != 1:
            raise TypeError(f"{name}: JAX arrays are supported on one CPU device, got {sorted(platforms)} "
                            f"on {len(a.devices())} device(s)")
        return "jax"
    raise TypeError(f"{name}: expected a NumPy array, a torch.Tensor, a CuPy array or a JAX array, "
                    f"got {type(a).__name__}")


def is_torch(a) -> bool:
    torch = _torch()
    return torch is not None and isinstance(a, torch.Tensor)


def is_compiling() -> bool:
    """True while torch.compile traces (data-dependent checks are skipped there)."""
    torch = _torch()
    return torch is not None and torch.compiler.is_compiling()


def device(a) -> tuple[str, int]:
    """('cpu', 0) or ('cuda', index)."""
    if isinstance(a, np.ndarray):
        return ("cpu", 0)
    if is_torch(a):
        return (a.device.type, a.device.index or 0)
    if _is_jax(a):
        return ("cpu", 0)
    return ("cuda", a.device.id)  # cupy


def dtype_name(a) -> str:
    if is_torch(a):
        return str(a.dtype).removeprefix("torch.")
    return a.dtype.name


def numel(a) -> int:
    return a.numel() if is_torch(a) else int(a.size)


def is_contiguous(a) -> bool:
    if _is_jax(a):
        return True  # a single-device JAX array is a dense row-major buffer
    return a.is_contiguous() if is_torch(a) else bool(a.flags.c_contiguous)


def is_mutable(a) -> bool:
    """Whether a kernel may write into a (JAX arrays never; NumPy and CuPy views may be read-only)."""
    if _is_jax(a):
        return False
    flags = getattr(a, "flags", None)
    return flags is None or bool(getattr(flags, "writeable", True))


def module(a):
    """The compiled module that runs kernels on a's device."""
    kind = device(a)[0]
    if kind == "cpu":
        return _cpu
    if kind == "cuda":
        if _cuda is None:
            raise RuntimeError(_cuda_missing)
        return _cuda
    raise TypeError(f"arrays on device type {kind!r} are not supported (cpu or cuda)")


def stream(a) -> int:
    """The caller's current CUDA stream for a's device, as an integer (0 on the CPU)."""
    kind, index = device(a)
    if kind != "cuda":
        return 0
    if is_torch(a):
        return _torch().cuda.current_stream(index).cuda_stream
    return _cupy().cuda.get_current_stream().ptr


def empty(like, n: int, dtype: str | None = None):
    """A new 1-D array of n elements in like's framework, on like's device; dtype defaults to like's."""
    dtype = dtype or dtype_name(like)
    if isinstance(like, np.ndarray) or _is_jax(like):
        return np.empty(n, dtype=np.dtype(dtype))
    if is_torch(like):
        torch = _torch()
        return torch.empty(n, dtype=getattr(torch, dtype), device=like.device)
    cupy = _cupy()
    with like.device:
        return cupy.empty(n, dtype=dtype)


def finish(like, out):
    """An output buffer from `empty(like, ...)` as an array of like's framework."""
    if _is_jax(like):
        import jax

        return jax.dlpack.from_dlpack(out)
    return out


# Outputs this large (CPU torch) come from the host buffer cache (csrc/common/host_pool.h).
POOL_MIN_BYTES = 8 << 20
_ITEM_BYTES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int32": 4, "int64": 8, "uint8": 1}


def output_buffer(like, n: int, dtype: str | None = None):
    """A new 1-D output of n elements, as ``empty``; but a CPU torch output of POOL_MIN_BYTES or more
    comes from commkernels' cache of host buffers: the pages of the last freed output of that size, already
    mapped (a fresh mapping costs a page fault per 4 KiB on its first touch, ~4 GB/s on these machines, often
    more than the kernel that writes it). The tensor is an ordinary one (autograd, in-place ops) except that
    its storage cannot be resized; when it dies its memory returns to the cache. See release_cached_memory."""
    dtype = dtype or dtype_name(like)
    if is_torch(like) and like.is_cpu and n * _ITEM_BYTES.get(dtype, 0) >= POOL_MIN_BYTES:
        return _cpu.host_buffer(n, dtype)
    return empty(like, n, dtype)


def release_cached_memory() -> int:
    """Frees the host buffers kept for large CPU torch outputs (see output_buffer); returns the bytes freed.

    At most min(RAM / 8, 4 GiB) of unused buffers is kept, the oldest freed first; buffers still in use
    return to the cache when they die."""
    return int(_cpu.host_pool_release())


def empty_on(framework_name: str, device_spec, n: int, dtype: str):
    """A new 1-D array for a caller who named a framework and device rather than passing an array."""
    if framework_name == "numpy":
        return np.empty(n, dtype=np.dtype(dtype))
    if framework_name == "torch":
        torch = _torch()
        return torch.empty(n, dtype=getattr(torch, dtype), device=device_spec)
    cupy = importlib.import_module("cupy")
    with cupy.cuda.Device(device_spec):
        return cupy.empty(n, dtype=dtype)


def cuda_device_count() -> int:
    return 0 if _cuda is None else _cuda.build_info()["device_count"]
