"""Communication topologies and mixing weights.

Builders return a `Graph` of NumPy int64 arrays (move it with ``graph.to(x)``; mix does that itself),
edges ordered by (dst, src). Undirected topologies hold each edge in both directions and no self loops.
Weight functions return the mixing matrix W as a weighted Graph: the edges of the input plus a self loop
on every node, edge_weight float64, so that ``mix(X, metropolis_hastings(g))`` is one gossip step.

Random graphs are seeded and the same on every platform: erdos_renyi compares raw 64-bit words of NumPy's
Philox4x64 bit generator (keyed by the seed) with p 2^64, barabasi_albert draws from the project's
Philox4x32-10 stream (csrc/graph/topology.h).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _backend, _checks
from ._graph import Graph, _to_host

_MAX_NODES = (1 << 31) - 1
_MAX_UINT64 = (1 << 64) - 1


def _nodes(n, name: str = "n", low: int = 0) -> int:
    return _checks.integer(n, name, low, _MAX_NODES)


def _graph(src, dst, n: int, weight=None) -> Graph:
    """A Graph from edge arrays, sorted by (dst, src), duplicate (src, dst) pairs removed when unweighted."""
    src, dst = np.asarray(src, np.int64).reshape(-1), np.asarray(dst, np.int64).reshape(-1)
    if weight is None:
        key = np.unique(dst * max(n, 1) + src)
        dst, src = key // max(n, 1), key % max(n, 1)
        return Graph(np.stack([src, dst]), n)
    order = np.lexsort((src, dst))
    return Graph(np.stack([src[order], dst[order]]), n, np.asarray(weight, np.float64)[order])


def _undirected(a, b, n: int) -> Graph:
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    keep = a != b
    a, b = a[keep], b[keep]
    return _graph(np.concatenate([a, b]), np.concatenate([b, a]), n)


def ring(n: int) -> Graph:
    """Node i exchanges with i - 1 and i + 1 (mod n)."""
    n = _nodes(n)
    i = np.arange(n)
    return _undirected(i, (i + 1) % max(n, 1), n)


def torus(rows: int, cols: int) -> Graph:
    """The rows x cols 2-D torus (grid with wrap-around); node (r, c) is r * cols + c."""
    rows, cols = _nodes(rows, "rows"), _nodes(cols, "cols")
    n = _checks.integer(rows * cols, "rows * cols", 0, _MAX_NODES)
    r, c = np.divmod(np.arange(n), max(cols, 1))
    right = r * cols + (c + 1) % max(cols, 1)
    down = ((r + 1) % max(rows, 1)) * cols + c
    return _undirected(np.concatenate([np.arange(n), np.arange(n)]), np.concatenate([right, down]), n)


def complete(n: int) -> Graph:
    """Every pair of distinct nodes."""
    n = _nodes(n)
    j, i = np.meshgrid(np.arange(n), np.arange(n))
    return _undirected(i.reshape(-1), j.reshape(-1), n)


def star(n: int, center: int = 0) -> Graph:
    """Node `center` exchanges with every other node."""
    n = _nodes(n)
    center = _checks.integer(center, "center", 0, max(n - 1, 0))
    return _undirected(np.full(n, center), np.arange(n), n)


def exponential(n: int) -> Graph:
    """The static exponential graph (directed): node i receives from i - 2^k (mod n) for every
    2^k < n, i.e. sends to i + 2^k (BlueFog's ExponentialTwoGraph)."""
    n = _nodes(n)
    i = np.arange(n)
    hops = [1 << k for k in range(max(n - 1, 0).bit_length())]
    src = np.concatenate([(i - h) % n for h in hops]) if hops else np.zeros(0, np.int64)
    dst = np.concatenate([i for _ in hops]) if hops else np.zeros(0, np.int64)
    return _graph(src, dst, n)


def one_peer_exponential(n: int, t: int) -> Graph:
    """The one-peer exponential mixing matrix at step t (Ying et al. 2021): y_i = (x_i + x_{i - 2^k}) / 2
    with k = t mod tau, tau = ceil(log2 n); a weighted Graph with self loops (weights 1/2; n = 1: the
    single self loop of weight 1). For n a power of 2, tau consecutive steps give the exact average."""
    n = _nodes(n, "n", 1)
    t = _checks.integer(t, "t", 0)
    tau = math.ceil(math.log2(n)) if n > 1 else 0
    i = np.arange(n)
    if tau == 0:
        return _graph(i, i, n, np.ones(n))
    peer = (i - (1 << (t % tau))) % n
    return _graph(np.concatenate([i, peer]), np.concatenate([i, i]), n, np.full(2 * n, 0.5))


def erdos_renyi(n: int, p: float, seed: int = 0) -> Graph:
    """G(n, p), undirected: the pair (i, j), i < j, in row-major order is the q-th pair, and is an edge when
    the q-th raw word of np.random.Philox(key=seed) is below p 2^64 (so p = 1 gives the complete graph).
    O(n^2) draws, in chunks of rows."""
    n = _nodes(n)
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"p: expected a probability in [0, 1], got {p!r}")
    seed = _checks.integer(seed, "seed", 0, _MAX_UINT64)
    limit = int(float(p) * 2.0**64)  # p < 1: exact as a float64 product; p = 1: every word passes
    bits = np.random.Philox(key=seed)
    a_parts, b_parts = [], []
    row = 0
    while row < n - 1:
        rows = max(1, min(n - 1 - row, (1 << 22) // max(n, 1)))
        i = np.repeat(np.arange(row, row + rows), n - 1 - np.arange(row, row + rows))
        j = np.concatenate([np.arange(r + 1, n) for r in range(row, row + rows)])
        words = bits.random_raw(i.size)
        keep = words >= 0 if p >= 1.0 else words < np.uint64(limit)
        a_parts.append(i[keep])
        b_parts.append(j[keep])
        row += rows
    a = np.concatenate(a_parts) if a_parts else np.zeros(0, np.int64)
    b = np.concatenate(b_parts) if b_parts else np.zeros(0, np.int64)
    return _undirected(a, b, n)


def barabasi_albert(n: int, m: int, seed: int = 0) -> Graph:
    """Barabasi-Albert preferential attachment, undirected, as networkx.barabasi_albert_graph: a star on
    nodes 0..m, then each new node attaches to m distinct nodes drawn with probability proportional to
    degree. Draws from the Philox stream keyed by seed (csrc/graph/topology.h). 1 <= m < n."""
    n = _nodes(n, "n", 2)
    m = _checks.integer(m, "m", 1, n - 1)
    seed = _checks.integer(seed, "seed", 0, _MAX_UINT64)
    edges = m + m * (n - m - 1)
    if 2 * edges >= 1 << 32:
        raise ValueError(f"n, m: too many edges ({edges}; 2 m n must stay below 2^32)")
    a, b = np.empty(edges, np.int64), np.empty(edges, np.int64)
    _backend._cpu.barabasi_albert(n, m, seed, a, b)
    return _undirected(a, b, n)


def remove_agents(graph: Graph, failed) -> Graph:
    """The graph among the surviving agents: nodes in `failed` (a sequence or array of node ids) and
    their edges removed, the survivors renumbered 0.. in their original order (survivor k is the k-th
    smallest id not in failed). Edge weights are kept for the surviving edges (recompute mixing weights
    with metropolis_hastings etc.: they are no longer stochastic). Returns a NumPy graph."""
    if not isinstance(graph, Graph):
        raise TypeError(f"graph: expected a Graph, got {type(graph).__name__}")
    failed = np.asarray(_to_host(failed) if not isinstance(failed, (list, tuple, range)) else list(failed))
    if failed.size and (failed.dtype.kind not in "iu"):
        raise TypeError(f"failed: expected integer node ids, got dtype {failed.dtype}")
    failed = failed.astype(np.int64).reshape(-1)
    n = graph.num_nodes
    if failed.size and (failed.min() < 0 or failed.max() >= n):
        raise ValueError(f"failed: expected node ids in [0, {n})")
    alive = np.ones(n, bool)
    alive[failed] = False
    new_id = np.cumsum(alive) - 1
    src, dst = _to_host(graph.src).astype(np.int64), _to_host(graph.dst).astype(np.int64)
    keep = alive[src] & alive[dst]
    w = None if graph.edge_weight is None else _to_host(graph.edge_weight)[keep]
    return Graph(np.stack([new_id[src[keep]], new_id[dst[keep]]]), int(alive.sum()), w)


# ---- mixing weights ---------------------------------------------------------------------------------

def _host_edges(graph: Graph):
    if not isinstance(graph, Graph):
        raise TypeError(f"graph: expected a Graph, got {type(graph).__name__}")
    src, dst = _to_host(graph.src).astype(np.int64), _to_host(graph.dst).astype(np.int64)
    keep = src != dst
    n = graph.num_nodes
    key = np.unique(dst[keep] * max(n, 1) + src[keep])  # distinct neighbour pairs, self loops dropped
    return key % max(n, 1), key // max(n, 1), n


def metropolis_hastings(graph: Graph) -> Graph:
    """Metropolis-Hastings weights of an undirected graph: w_ij = 1 / (1 + max(d_i, d_j)) on each edge,
    w_ii = 1 - sum_j w_ij (d = number of distinct neighbours; self loops and duplicates of the input are
    ignored). Symmetric and doubly stochastic. ValueError if an edge lacks its reverse."""
    src, dst, n = _host_edges(graph)
    if not np.array_equal(np.sort(dst * max(n, 1) + src), np.sort(src * max(n, 1) + dst)):
        raise ValueError("graph: metropolis_hastings needs an undirected graph (every edge in both directions)")
    deg = np.bincount(dst, minlength=n).astype(np.float64)
    w = 1.0 / (1.0 + np.maximum(deg[src], deg[dst]))
    self_w = 1.0 - np.bincount(dst, weights=w, minlength=n)
    i = np.arange(n)
    return _graph(np.concatenate([src, i]), np.concatenate([dst, i]), n, np.concatenate([w, self_w]))


def uniform(graph: Graph) -> Graph:
    """Row-stochastic uniform weights: node i averages itself and its distinct in-neighbours,
    W[i, j] = W[i, i] = 1 / (in_deg_i + 1)."""
    src, dst, n = _host_edges(graph)
    deg = np.bincount(dst, minlength=n).astype(np.float64)
    i = np.arange(n)
    return _graph(np.concatenate([src, i]), np.concatenate([dst, i]), n,
                  np.concatenate([1.0 / (deg[dst] + 1.0), 1.0 / (deg + 1.0)]))


def push_sum_weights(graph: Graph) -> Graph:
    """Column-stochastic push-sum weights: node j splits its mass equally between itself and its
    distinct out-neighbours, W[i, j] = W[j, j] = 1 / (out_deg_j + 1)."""
    src, dst, n = _host_edges(graph)
    deg = np.bincount(src, minlength=n).astype(np.float64)
    i = np.arange(n)
    return _graph(np.concatenate([src, i]), np.concatenate([dst, i]), n,
                  np.concatenate([1.0 / (deg[src] + 1.0), 1.0 / (deg + 1.0)]))
