"""graph gossip-mixing cases: Y = W^rounds X for n agents with d parameters each (float32 torch tensors),
against eager torch on the same data.

Dense W (a random row-stochastic matrix): baselines torch.matmul(W, X) once per round, and one
torch.matmul with torch.linalg.matrix_power(W, rounds) (the same algebra as ours for rounds > 1).
Sparse W (Metropolis-Hastings weights of the static exponential graph, log2(n) + 2 entries per row):
baselines torch.sparse.mm with W as a sparse CSR tensor, once per round, and the dense matmul per round.
n in {16, 64, 256}, d in {1e6, 1e7}, rounds in {1, 4}; cases with n d > 2^28 (1 GiB of float32 per
array) are skipped to keep memory in bounds on shared machines; --quick keeps d = 1e6 and n <= 64.
Floor: one read of X and one write of Y (2 n d 4 bytes), whatever the number of rounds.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import graph as G
from .harness import Case, Prepared

FAMILY = "graph_mix"
AGENTS = (16, 64, 256)
SIZES = (10**6, 10**7)
QUICK_SIZES = (10**6,)
ROUNDS = (1, 4)
MAX_ELEMENTS = 1 << 28
SEED = 20240607


def _short(d: int) -> str:
    return f"1e{len(str(d)) - 1}" if str(d).strip("0") == "1" else str(d)


def _x(n: int, d: int, device: str) -> torch.Tensor:
    generator = torch.Generator(device=device).manual_seed(SEED + n)
    return torch.randn(n, d, generator=generator, device=device)


def _dense(n: int, d: int, rounds: int, device: str) -> Prepared:
    x = _x(n, d, device)
    generator = torch.Generator(device=device).manual_seed(SEED)
    w = torch.rand(n, n, generator=generator, device=device)
    w /= w.sum(dim=1, keepdim=True)

    def per_round():
        y = x
        for _ in range(rounds):
            y = torch.matmul(w, y)
        return y

    baselines = {"torch.matmul per round": per_round}
    if rounds > 1:
        baselines["torch.matmul(matrix_power(W, r), X)"] = lambda: torch.matmul(torch.linalg.matrix_power(w, rounds), x)
    return Prepared(ours=lambda: G.mix(x, w, rounds), baselines=baselines)


def _sparse(n: int, d: int, rounds: int, device: str) -> Prepared:
    x = _x(n, d, device)
    # MH weights need an undirected graph: the exponential graph with its edges in both directions
    ei = G.exponential(n).edge_index
    graph = G.metropolis_hastings(G.Graph(np.concatenate([ei, ei[::-1]], axis=1), n)).to(x)
    dense = torch.from_numpy(graph.to_dense("float32")).to(device)
    sparse = dense.to_sparse_csr()
    G.mix(x[:, :1].contiguous(), graph, rounds)  # graph arrays moved to x's device once, outside the timing

    def sparse_mm():
        y = x
        for _ in range(rounds):
            y = torch.sparse.mm(sparse, y)
        return y

    def dense_mm():
        y = x
        for _ in range(rounds):
            y = torch.matmul(dense, y)
        return y

    return Prepared(ours=lambda: G.mix(x, graph, rounds),
                    baselines={"torch.sparse.mm (CSR) per round": sparse_mm, "torch.matmul per round": dense_mm})


def _case(kind: str, n: int, d: int, rounds: int, device: str) -> Case:
    prepare = _dense if kind == "dense" else _sparse
    return Case(family=FAMILY, kernel=f"mix[{kind}]", ours=f"graph.mix(X, {'W' if kind == 'dense' else 'Graph'}, rounds)",
                columns={"n": str(n), "d": _short(d), "rounds": str(rounds)},
                params={"d": d, "n": n, "rounds": rounds, "dtype": "float32", "W": kind},
                floor_bytes=2 * n * d * 4, prepare=lambda: prepare(n, d, rounds, device))


def cases(device: str = "cpu", quick: bool = False, sizes=None) -> list[Case]:
    sizes = list(sizes) if sizes else list(QUICK_SIZES if quick else SIZES)
    out = []
    for kind in ("dense", "sparse"):
        for n in AGENTS:
            if quick and n > 64:
                continue
            for d in sizes:
                if n * d > MAX_ELEMENTS:
                    continue
                out += [_case(kind, n, d, rounds, device) for rounds in ROUNDS]
    return out
