"""Argument validation shared by the public API: each failure names the argument and what was expected."""

from __future__ import annotations

import numbers

from . import _backend


def float_array(a, name: str) -> str:
    """Checks that `a` is a contiguous floating-point array of a supported framework; returns the framework."""
    fw = _backend.framework(a, name)
    dtype = _backend.dtype_name(a)
    if dtype not in _backend.FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32, float64, float16 or bfloat16, got {dtype}")
    if fw == "jax" and dtype == "bfloat16":
        # outputs for JAX are NumPy buffers, and NumPy cannot hand a bfloat16 buffer over DLPack
        raise TypeError(f"{name}: bfloat16 JAX arrays are not supported (float32, float64, float16 are)")
    contiguous(a, name)
    return fw


def contiguous(a, name: str) -> None:
    # Refused rather than copied: a silent copy would hide a cost, and for an array updated in place it
    # would lose the update.
    if not _backend.is_contiguous(a):
        raise ValueError(f"{name}: expected a C-contiguous array (make it contiguous first)")


def same_place(a, b, name_a: str, name_b: str) -> None:
    """Same framework and the same device."""
    fa, fb = _backend.framework(a, name_a), _backend.framework(b, name_b)
    if fa != fb:
        raise TypeError(f"{name_b}: expected a {fa} array like {name_a}, got {fb}")
    if _backend.device(a) != _backend.device(b):
        raise TypeError(f"{name_b}: expected an array on {name_a}'s device {_backend.device(a)}, "
                        f"got {_backend.device(b)}")


def integer(value, name: str, low: int | None = None, high: int | None = None) -> int:
    """An int in [low, high] (bounds optional); bool and float are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"{'' if low is None else f'{low} <= '}{name}{'' if high is None else f' <= {high}'}"
        raise ValueError(f"{name}: expected {bounds}, got {value}")
    return value


def writable(a, name: str) -> None:
    """For arrays a function updates in place: JAX arrays are immutable (TypeError); NumPy and CuPy
    views may be read-only (ValueError)."""
    if _backend.framework(a, name) == "jax":
        raise TypeError(f"{name}: JAX arrays are immutable, and this argument is updated in place: "
                        "pass a NumPy, torch or CuPy array")
    if not _backend.is_mutable(a):
        raise ValueError(f"{name}: expected a writable array (it is updated in place), got a read-only one")


MAX_SIZE = (1 << 31) - 1  # index outputs are int32


def grad_and_residual(grad, residual) -> int:
    """The (grad, residual) pair of an error-feedback kernel: float arrays in one framework and device, the
    residual writable, float32 or grad's dtype, with as many elements as grad. Returns that size."""
    float_array(grad, "grad")
    float_array(residual, "residual")
    writable(residual, "residual")
    same_place(grad, residual, "grad", "residual")
    size = integer(_backend.numel(grad), "grad.size", 0, MAX_SIZE)
    if _backend.numel(residual) != size:
        raise ValueError(f"residual: expected {size} elements like grad, got {_backend.numel(residual)}")
    gdt, rdt = _backend.dtype_name(grad), _backend.dtype_name(residual)
    if rdt != gdt and (rdt != "float32" or gdt == "float64"):
        raise TypeError(f"residual: expected float32 or grad's dtype {gdt}, got {rdt}")
    return size
