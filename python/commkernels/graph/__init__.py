"""Communication graphs: gossip/consensus mixing over agent graphs, and message-passing primitives.

Semantics are those of ``shared/specs/graph.md``; the executable specification is
``commkernels.reference.graph``. Row = receiver: y_i = sum_j W[i, j] x_j.

Modules: ``_graph`` (the Graph class and its cached CSR/CSC views).
"""

from ._graph import CSR, Graph

__all__ = ["CSR", "Graph"]
