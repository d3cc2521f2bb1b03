"""Communication graphs: gossip/consensus mixing over agent graphs, and message-passing primitives.

Semantics are those of ``shared/specs/graph.md``; the executable specification is
``commkernels.reference.graph`` and ``commkernels.reference.graph_mp``. Row = receiver: y_i = sum_j W[i, j] x_j.

Modules: ``_graph`` (the Graph class and its cached CSR/CSC views); ``_scatter`` (scatter, segment, gather
with torch_scatter's semantics, deterministic).
"""

from ._graph import CSR, Graph
from ._scatter import REDUCES, gather, scatter, segment

__all__ = ["CSR", "Graph", "REDUCES", "gather", "scatter", "segment"]
