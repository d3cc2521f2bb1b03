"""commkernels: fast, exact kernels for the communication side of machine learning at scale.

Families: ``commkernels.compress`` (gradient compression). See README.md and shared/specs/.
"""

from __future__ import annotations

from . import _backend, compress, graph
from ._info import info

__version__ = "0.1.0"
__all__ = ["compress", "graph", "info", "set_num_threads", "get_num_threads", "__version__"]


def set_num_threads(n: int) -> None:
    """Sets the number of OpenMP threads the CPU kernels use (as OMP_NUM_THREADS does at start-up)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    _backend._cpu.set_num_threads(n)


def get_num_threads() -> int:
    """The number of OpenMP threads the CPU kernels use."""
    return _backend._cpu.get_num_threads()
