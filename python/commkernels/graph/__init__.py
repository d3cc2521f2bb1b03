"""commkernels.graph: communication-graph message passing (see shared/specs/graph.md).

Row reductions with torch_scatter's semantics, deterministic: ``scatter``, ``segment``, ``gather``.
"""

from ._scatter import REDUCES, gather, scatter, segment

__all__ = ["REDUCES", "gather", "scatter", "segment"]
