"""Communication graphs: gossip/consensus mixing over agent graphs, and message-passing primitives.

Semantics are those of ``shared/specs/graph.md``; the executable specifications are
``commkernels.reference.graph`` and ``commkernels.reference.graph_mp``. Row = receiver: y_i = sum_j W[i, j] x_j
(``transpose=True`` where a matrix is indexed [sender, receiver], as in BlueFog).

Modules: ``_graph`` (the Graph class and its cached CSR/CSC views), ``_topology`` (topologies and mixing
weights), ``_mix`` (mix, push_sum, consensus_distance, spectral_gap), ``_scatter`` (scatter, segment, gather
with torch_scatter's semantics, deterministic), ``_spmm`` (spmm, sddmm, edge_softmax over the cached CSR/CSC),
``_attention`` (graph_attention, fused).
"""

from ._attention import graph_attention
from ._graph import CSR, Graph
from ._mix import consensus_distance, mix, push_sum, spectral_gap
from ._scatter import REDUCES, gather, scatter, segment
from ._spmm import edge_softmax, sddmm, spmm
from ._topology import (barabasi_albert, complete, erdos_renyi, exponential, metropolis_hastings, one_peer_exponential,
                        push_sum_weights, remove_agents, ring, star, torus, uniform)

__all__ = [
    "CSR", "Graph",
    "ring", "torus", "complete", "star", "exponential", "one_peer_exponential", "erdos_renyi", "barabasi_albert",
    "remove_agents", "metropolis_hastings", "uniform", "push_sum_weights",
    "mix", "push_sum", "consensus_distance", "spectral_gap",
    "REDUCES", "scatter", "segment", "gather", "spmm", "sddmm", "edge_softmax", "graph_attention",
]
