"""Picks the compiled module for an array and speaks each framework's dialect.

Arrays reach the kernels zero-copy through DLPack (nanobind's ``nb::ndarray``); outputs are allocated
here, in the caller's framework and on the caller's device, so NumPy in gives NumPy out, torch in gives
torch out and CuPy in gives CuPy out. CUDA kernels run on the caller's current stream.
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


def framework(a, name: str) -> str:
    """'numpy', 'torch' or 'cupy'; TypeError naming `name` for anything else."""
    if isinstance(a, np.ndarray):
        return "numpy"
    torch = _torch()
    if torch is not None and isinstance(a, torch.Tensor):
        return "torch"
    cupy = _cupy()
    if cupy is not None and isinstance(a, cupy.ndarray):
        return "cupy"
    raise TypeError(f"{name}: expected a NumPy array, a torch.Tensor or a CuPy array, got {type(a).__name__}")


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
    return ("cuda", a.device.id)  # cupy


def dtype_name(a) -> str:
    if is_torch(a):
        return str(a.dtype).removeprefix("torch.")
    return a.dtype.name


def numel(a) -> int:
    return a.numel() if is_torch(a) else int(a.size)


def is_contiguous(a) -> bool:
    return a.is_contiguous() if is_torch(a) else bool(a.flags.c_contiguous)


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
    if isinstance(like, np.ndarray):
        return np.empty(n, dtype=np.dtype(dtype))
    if is_torch(like):
        torch = _torch()
        return torch.empty(n, dtype=getattr(torch, dtype), device=like.device)
    cupy = _cupy()
    with like.device:
        return cupy.empty(n, dtype=dtype)


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
