"""Communication graphs: gossip/consensus mixing over agent graphs, and message-passing primitives.

Semantics are those of ``shared/specs/graph.md``; the executable specification is
``commkernels.reference.graph`` and ``commkernels.reference.graph_mp``. Row = receiver: y_i = sum_j W[i, j] x_j.

Modules: ``_graph`` (the Graph class and its cached CSR/CSC views); ``_scatter`` (scatter, segment, gather
with torch_scatter's semantics, deterministic); ``_spmm`` (spmm, sddmm, edge_softmax over the cached CSR/CSC);
``_attention`` (graph_attention, fused).
"""

from ._graph import CSR, Graph
from ._scatter import REDUCES, gather, scatter, segment
from ._attention import graph_attention
from ._spmm import edge_softmax, sddmm, spmm

__all__ = ["CSR", "Graph", "REDUCES", "edge_softmax", "gather", "graph_attention", "scatter", "sddmm", "segment",
           "spmm"]
