"""graph message-passing cases: scatter, spmm, edge_softmax and graph_attention against torch (and
torch_scatter / PyG where importable) on the same data. PyG's rows are its public functions as its layers
call them: `utils.scatter`, `utils.spmm` on the same CSR matrix, `utils.softmax` over the destination
index, and GATConv's message passing (softmax, then scatter of alpha * v[src]) for graph_attention.

Edges E in {1e6, 1e7} (1e7 skipped by --quick) into N = E / 10 destination rows, features F in
{16, 64, 256}, float32; cases with E * F above 2.6e8 elements (1 GiB of float32 src) are left out so
that a run fits beside other people's work on a shared machine (E = 1e7 runs at F = 16). Degree
distributions: "random" (destinations uniform) and "powerlaw" (Barabasi-Albert-like: the expected
in-degree of node r, in a random order of the nodes, is proportional to 1 / sqrt(r + 1), as the r-th
oldest node's in BA, so P(k) ~ k^-3). scatter runs on unsorted and on sorted indices; spmm on a weighted
graph's cached CSR and CSR-ordered weights (built before timing, as a GNN layer reuses its graph, and as
the baseline's sparse matrix is built before timing).

Floors: scatter reads src (E F b) and the index (8 E) and writes out (N F b); spmm gathers a row of x per
edge (E F b, the spec's b + (4 + b) / F per edge-feature with its index and weight) and writes out;
edge_softmax reads and writes the (E, H) scores and reads the CSR; graph_attention reads q, k, v rows per
edge (a cache line each at F = 16) and writes out.
"""

from __future__ import annotations

import importlib.util
import math

import torch

from .. import graph
from .harness import Case, Prepared

FAMILY = "graph_mp"
EDGES = (10**6, 10**7)
QUICK_EDGES = (10**6,)
FEATURES = (16, 64, 256)
MAX_ELEMENTS = 260_000_000
SEED = 20261127
HEADS, HEAD_DIM = 4, 16


def _torch_scatter():
    if importlib.util.find_spec("torch_scatter") is None:
        return None
    import torch_scatter

    return torch_scatter


def _pyg_utils():
    if importlib.util.find_spec("torch_geometric") is None:
        return None
    import torch_geometric.utils

    return torch_geometric.utils


def _generator(device: str, stream: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(SEED + stream)


def _destinations(e: int, n: int, degrees: str, stream: int) -> torch.Tensor:
    g = _generator("cpu", stream)
    if degrees == "random":
        return torch.randint(0, n, (e,), generator=g)
    weight = 1.0 / torch.sqrt(torch.arange(1, n + 1, dtype=torch.float64))
    cdf = torch.cumsum(weight, 0)
    cdf /= cdf[-1].clone()
    rank = torch.searchsorted(cdf, torch.rand(e, generator=g, dtype=torch.float64)).clamp_(max=n - 1)
    return torch.randperm(n, generator=g)[rank]


def _label(x: int) -> str:
    exp = int(math.log10(x))
    return f"1e{exp}" if 10**exp == x else str(x)


def _scatter(e: int, f: int, degrees: str, order: str, reduce: str, device: str) -> Prepared:
    n = e // 10
    g = _generator(device, 1)
    src = torch.randn(e, f, generator=g).to(device)
    index = _destinations(e, n, degrees, 2)
    if order == "sorted":
        index = index.sort().values
    index = index.to(device)
    out = torch.zeros(n, f, device=device)
    baselines = {}
    if reduce == "sum":
        baselines["torch index_add_"] = lambda: out.zero_().index_add_(0, index, src)
    expanded = index.unsqueeze(1).expand(e, f)
    amax = {"sum": "sum", "max": "amax"}[reduce]
    baselines["torch scatter_reduce"] = lambda: out.zero_().scatter_reduce_(0, expanded, src, amax, include_self=False)
    ts = _torch_scatter()
    if ts is not None:
        baselines[f"torch_scatter {reduce}"] = lambda: ts.scatter(src, index, dim=0, dim_size=n, reduce=reduce)
        if order == "sorted":
            baselines["torch_scatter segment_coo"] = lambda: ts.segment_coo(src, index, dim_size=n, reduce=reduce)
    pyg = _pyg_utils()
    if pyg is not None:
        baselines[f"PyG scatter {reduce}"] = lambda: pyg.scatter(src, index, 0, n, reduce)
    return Prepared(ours=lambda: graph.scatter(src, index, n, reduce), baselines=baselines)


def _graph(e: int, degrees: str, device: str, edge_weight=None):
    n = e // 10
    dst = _destinations(e, n, degrees, 3)
    src = torch.randint(0, n, (e,), generator=_generator("cpu", 4))
    g = graph.Graph(torch.stack([src, dst]).to(device), n, edge_weight=edge_weight)
    g.csr, g.csc  # noqa: B018  (built once, outside the timing, as a layer reuses its graph)
    if edge_weight is not None:
        g.weight_csr  # noqa: B018  (likewise its weights in CSR order, as the baseline's sparse matrix)
    return g, src.to(device), dst.to(device), n


def _spmm(e: int, f: int, degrees: str, device: str) -> Prepared:
    w = torch.rand(e, generator=_generator(device, 6)).to(device)
    g, src, dst, n = _graph(e, degrees, device, edge_weight=w)
    x = torch.randn(n, f, generator=_generator(device, 5)).to(device)
    # torch's CSR needs sorted, distinct columns per row: its own COO -> CSR (duplicate edges summed, which
    # leaves the sum-SpMM unchanged), built outside the timing like our cached CSR
    adjacency = torch.sparse_coo_tensor(torch.stack([dst, src]), w, (n, n)).coalesce().to_sparse_csr()
    out = torch.zeros(n, f, device=device)
    baselines = {
        "torch.sparse.mm (CSR)": lambda: torch.sparse.mm(adjacency, x),
        "torch index_add_": lambda: out.zero_().index_add_(0, dst, x[src] * w[:, None]),
    }
    ts = _torch_scatter()
    if ts is not None:
        baselines["torch_scatter sum"] = lambda: ts.scatter(x[src] * w[:, None], dst, dim=0, dim_size=n)
    pyg = _pyg_utils()
    if pyg is not None:
        baselines["PyG spmm (CSR)"] = lambda: pyg.spmm(adjacency, x)
    return Prepared(ours=lambda: graph.spmm(g, x), baselines=baselines)


def _torch_edge_softmax(scores, dst, n):
    """DGL's edge_softmax as eager torch: segment max, exp, segment sum, divide."""
    h = scores.shape[1]
    idx = dst.unsqueeze(1).expand(-1, h)
    m = torch.full((n, h), float("-inf"), device=scores.device).scatter_reduce_(0, idx, scores, "amax")
    p = torch.exp(scores - m[dst])
    s = torch.zeros(n, h, device=scores.device).index_add_(0, dst, p)
    return p / s[dst]


def _edge_softmax(e: int, degrees: str, device: str) -> Prepared:
    g, src, dst, n = _graph(e, degrees, device)
    scores = torch.randn(e, HEADS, generator=_generator(device, 7)).to(device)
    baselines = {"torch composite": lambda: _torch_edge_softmax(scores, dst, n)}
    pyg = _pyg_utils()
    if pyg is not None:
        baselines["PyG softmax"] = lambda: pyg.softmax(scores, dst, num_nodes=n)
    return Prepared(ours=lambda: graph.edge_softmax(g, scores), baselines=baselines)


def _attention(e: int, degrees: str, device: str) -> Prepared:
    g, src, dst, n = _graph(e, degrees, device)
    gen = _generator(device, 8)
    q, k, v = (torch.randn(n, HEADS, HEAD_DIM, generator=gen).to(device) for _ in range(3))
    scale = 1.0 / math.sqrt(HEAD_DIM)

    def torch_attention():
        logits = (q[dst] * k[src]).sum(-1) * scale
        alpha = _torch_edge_softmax(logits, dst, n)
        return torch.zeros(n, HEADS, HEAD_DIM, device=device).index_add_(0, dst, alpha.unsqueeze(-1) * v[src])

    baselines = {"torch composite": torch_attention}
    pyg = _pyg_utils()
    if pyg is not None:

        def pyg_attention():  # GATConv's message and aggregate steps on the same logits
            alpha = pyg.softmax((q[dst] * k[src]).sum(-1) * scale, dst, num_nodes=n)
            return pyg.scatter(alpha.unsqueeze(-1) * v[src], dst, 0, n, "sum")

        baselines["PyG softmax + scatter (GATConv)"] = pyg_attention
    return Prepared(ours=lambda: graph.graph_attention(g, q, k, v), baselines=baselines)


def cases(device: str = "cpu", quick: bool = False, sizes=None) -> list[Case]:
    edges = [int(s) for s in sizes] if sizes else list(QUICK_EDGES if quick else EDGES)
    out = []
    b = 4  # float32
    for e in edges:
        n = e // 10
        for f in FEATURES:
            if e * f > MAX_ELEMENTS:
                continue
            for degrees in ("random", "powerlaw"):
                for order in ("unsorted", "sorted"):
                    cols = {"E": _label(e), "F": str(f), "degrees": degrees, "index": order}
                    out.append(Case(FAMILY, "scatter_sum", "graph.scatter(src, index, N, 'sum')", cols,
                                    {"d": e, "E": e, "N": n, "F": f, "degrees": degrees, "index": order},
                                    e * f * b + 8 * e + n * f * b,
                                    lambda e=e, f=f, dg=degrees, o=order: _scatter(e, f, dg, o, "sum", device)))
                cols = {"E": _label(e), "F": str(f), "degrees": degrees, "index": "CSR"}
                out.append(Case(FAMILY, "spmm_sum", "graph.spmm(weighted graph, x)", cols,
                                {"d": e, "E": e, "N": n, "F": f, "degrees": degrees},
                                e * f * b + e * (8 + b + 8) + n * f * b,
                                lambda e=e, f=f, dg=degrees: _spmm(e, f, dg, device)))
            cols = {"E": _label(e), "F": str(f), "degrees": "random", "index": "unsorted"}
            out.append(Case(FAMILY, "scatter_max", "graph.scatter(src, index, N, 'max')", cols,
                            {"d": e, "E": e, "N": n, "F": f, "degrees": "random", "index": "unsorted"},
                            e * f * b + 8 * e + n * f * (b + 8),
                            lambda e=e, f=f: _scatter(e, f, "random", "unsorted", "max", device)))
        for degrees in ("random", "powerlaw"):
            cols = {"E": _label(e), "F": f"{HEADS} heads", "degrees": degrees, "index": "CSR"}
            out.append(Case(FAMILY, "edge_softmax", "graph.edge_softmax(graph, scores)", cols,
                            {"d": e, "E": e, "N": n, "H": HEADS, "degrees": degrees},
                            2 * e * HEADS * b + 16 * e, lambda e=e, dg=degrees: _edge_softmax(e, dg, device)))
            cols = {"E": _label(e), "F": f"{HEADS}x{HEAD_DIM}", "degrees": degrees, "index": "CSR"}
            out.append(Case(FAMILY, "graph_attention", "graph.graph_attention(graph, q, k, v)", cols,
                            {"d": e, "E": e, "N": n, "H": HEADS, "D": HEAD_DIM, "degrees": degrees},
                            2 * e * HEADS * HEAD_DIM * b + 16 * e + 2 * n * HEADS * HEAD_DIM * b,
                            lambda e=e, dg=degrees: _attention(e, dg, device)))
    return out
