"""commkernels: fast, exact kernels for the communication side of machine learning at scale.

Families: ``commkernels.compress`` (gradient compression), ``commkernels.aggregate`` and
``commkernels.attacks`` (robust and federated aggregation), ``commkernels.moe`` (mixture-of-experts
routing), ``commkernels.graph`` (communication-graph message passing), ``commkernels.distributed`` (the
kernels inside torch.distributed; imported explicitly, it needs torch). See README.md and shared/specs/.
"""

from __future__ import annotations

from . import _backend, aggregate, compress, graph, moe
from . import attacks  # after aggregate: the attacks read their inputs through aggregate._inputs
from ._info import info

__version__ = "0.1.0"
__all__ = ["aggregate", "attacks", "compress", "graph", "moe", "info", "set_num_threads", "get_num_threads",
           "release_cached_memory", "__version__"]


def set_num_threads(n: int) -> None:
    """Sets the number of OpenMP threads the CPU kernels use (as OMP_NUM_THREADS does at start-up)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    _backend._cpu.set_num_threads(n)


def get_num_threads() -> int:
    """The number of OpenMP threads the CPU kernels use."""
    return _backend._cpu.get_num_threads()


def release_cached_memory() -> int:
    """Frees the host buffers kept for large CPU torch outputs; returns the bytes freed.

    Outputs of 8 MiB or more that commkernels allocates for CPU torch tensors (moe's permute/combine and
    their gradients, aggregate's results, compress's codes and dense vectors) come from a cache: when one
    dies its memory is kept (at most min(RAM / 8, 4 GiB) unused) and serves the next output of that size,
    because touching fresh pages costs a page fault per 4 KiB. Buffers in use return when they die."""
    return _backend.release_cached_memory()
