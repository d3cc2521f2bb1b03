"""NumPy float64 references for commkernels.graph (Graph views, mixing, topologies, weights).

Written from the definitions in shared/specs/graph.md: dense matrices and plain loops, never the
kernels' algorithms.
"""

from __future__ import annotations

import math

import numpy as np


def csr_by_key(keys, values, n: int):
    """(indptr, sorted values, edge ids) of the edges grouped by key, each group in ascending edge id."""
    keys = np.asarray(keys, np.int64)
    values = np.asarray(values, np.int64)
    eid = np.array([e for k in range(n) for e in range(keys.size) if keys[e] == k], np.int64)
    counts = np.array([np.sum(keys == k) for k in range(n)], np.int64)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return indptr, values[eid] if eid.size else np.zeros(0, np.int64), eid


def dense_matrix(src, dst, n: int, weight=None) -> np.ndarray:
    """W[dst, src] (duplicate edges summed; weight 1 when none)."""
    W = np.zeros((n, n))
    w = np.ones(len(src)) if weight is None else np.asarray(weight, np.float64)
    for s, d, v in zip(np.asarray(src), np.asarray(dst), w):
        W[int(d), int(s)] += v
    return W


def mix(X, W, rounds: int = 1) -> np.ndarray:
    """W^rounds X, one product per round, in float64."""
    Y = np.asarray(X, np.float64)
    for _ in range(rounds):
        Y = np.asarray(W, np.float64) @ Y
    return Y


def consensus_distance(X) -> float:
    X = np.asarray(X, np.float64)
    if X.size == 0:
        return 0.0
    return float(np.mean(np.sum((X - X.mean(axis=0)) ** 2, axis=1)))


def neighbours(n: int, pairs) -> np.ndarray:
    """The adjacency matrix A[i, j] = 1 for each (i, j) in pairs and its reverse, no self loops."""
    A = np.zeros((n, n))
    for i, j in pairs:
        if i != j:
            A[i, j] = A[j, i] = 1
    return A


def ring(n: int) -> np.ndarray:
    return neighbours(n, [(i, (i + 1) % n) for i in range(n)])


def torus(rows: int, cols: int) -> np.ndarray:
    pairs = []
    for r in range(rows):
        for c in range(cols):
            pairs += [(r * cols + c, r * cols + (c + 1) % cols), (r * cols + c, ((r + 1) % rows) * cols + c)]
    return neighbours(rows * cols, pairs)


def complete(n: int) -> np.ndarray:
    return np.ones((n, n)) - np.eye(n)


def star(n: int, center: int = 0) -> np.ndarray:
    return neighbours(n, [(center, j) for j in range(n)])


def exponential(n: int) -> np.ndarray:
    """A[i, j] = 1 when i - j = 2^k (mod n) for some 2^k < n (j sends to i)."""
    A = np.zeros((n, n))
    k = 1
    while k < n:
        for i in range(n):
            A[i, (i - k) % n] = 1
        k *= 2
    return A


def one_peer_exponential(n: int, t: int) -> np.ndarray:
    """y_i = (x_i + x_{i - 2^(t mod tau)}) / 2, tau = ceil(log2 n)."""
    if n == 1:
        return np.ones((1, 1))
    tau = math.ceil(math.log2(n))
    W = np.zeros((n, n))
    for i in range(n):
        W[i, i] += 0.5
        W[i, (i - 2 ** (t % tau)) % n] += 0.5
    return W


def metropolis_hastings(A) -> np.ndarray:
    A = (np.asarray(A) != 0).astype(float)
    np.fill_diagonal(A, 0)
    deg = A.sum(axis=1)
    n = A.shape[0]
    W = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if A[i, j]:
                W[i, j] = 1.0 / (1.0 + max(deg[i], deg[j]))
        W[i, i] = 1.0 - W[i].sum()
    return W


def uniform(A) -> np.ndarray:
    """Row i: 1 / (in_deg_i + 1) on i and each in-neighbour (A[i, j] != 0: j sends to i)."""
    A = (np.asarray(A) != 0).astype(float)
    np.fill_diagonal(A, 0)
    W = A + np.eye(A.shape[0])
    return W / W.sum(axis=1, keepdims=True)


def push_sum_weights(A) -> np.ndarray:
    """Column j: 1 / (out_deg_j + 1) on j and each out-neighbour."""
    A = (np.asarray(A) != 0).astype(float)
    np.fill_diagonal(A, 0)
    W = A + np.eye(A.shape[0])
    return W / W.sum(axis=0, keepdims=True)


def spectral_gap(W) -> float:
    W = np.asarray(W, np.float64)
    n = W.shape[0]
    if n <= 1:
        return 1.0
    if np.allclose(W, W.T, rtol=0, atol=0):
        lam = sorted(np.abs(np.linalg.eigvals(W)), reverse=True)
        return float(1.0 - lam[1])
    return float(1.0 - np.linalg.svd(W - np.ones((n, n)) / n, compute_uv=False)[0])
