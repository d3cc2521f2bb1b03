"""commkernels.info(): what was compiled and what this machine offers."""

from __future__ import annotations

from . import _backend


def info() -> dict:
    """Version, compiled backends (CPU with its OpenMP threads, CUDA compiled or not, GPU visible or not),
    build type and flags."""
    from . import __version__

    cuda = {"compiled": _backend._cuda is not None}
    if _backend._cuda is not None:
        cuda.update(_backend._cuda.build_info())
        cuda["gpu_visible"] = cuda["device_count"] > 0
    else:
        cuda["reason"] = _backend._cuda_missing
        cuda["gpu_visible"] = False
    return {"version": __version__, "cpu": _backend._cpu.build_info(), "cuda": cuda}


def format_info(data: dict) -> str:
    lines = [f"commkernels {data['version']}"]
    for name in ("cpu", "cuda"):
        lines.append(f"{name}:")
        lines += [f"  {key}: {value}" for key, value in data[name].items()]
    return "\n".join(lines)
