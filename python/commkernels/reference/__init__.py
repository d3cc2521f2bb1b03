"""NumPy float64 references: the executable specification of every kernel.

Each reference is written from the definition (the paper, the anchor library, ``shared/specs/``), simple
and obviously right, never a copy of a kernel's algorithm. Tests compare the kernels with these.
"""

from . import compress, graph, graph_mp, moe, moe_balance

__all__ = ["compress", "graph", "graph_mp", "moe", "moe_balance"]
