"""NumPy float64 references of the distance-based rules of commkernels.aggregate (shared/specs/aggregate.md).

Written from the definitions, directly on the updates X (an (n, d) float64 array here): distances are
``np.linalg.norm`` of differences, subsets are enumerated, subspaces come from SVDs in R^d. No Gram-matrix
tricks: the kernels (commkernels/aggregate/_gram.py and friends) must agree with these.

Conventions shared by every rule:
- A "bad" row holds a NaN or an infinity. It is infinitely far from every point (itself included), is
  never selected, and gets weight zero; pre-aggregations that map rows to rows (clip, arc) map it to a
  zero row; bucketing's bucket that holds it is non-finite (the rule that follows copes with it).
- Ties in any selection go to the lower index.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def _bad(X):
    return ~np.all(np.isfinite(X), axis=1)


def sqdist(X):
    """Squared Euclidean distances, +inf for any pair that involves a bad row (the diagonal of a bad row too)."""
    X = np.asarray(X, np.float64)
    n = X.shape[0]
    bad = _bad(X)
    D = np.full((n, n), np.inf)
    for i in range(n):
        for k in range(n):
            if not bad[i] and not bad[k]:
                D[i, k] = float(np.sum((X[i] - X[k]) ** 2))
    return D


def gram(X, center=True):
    """(G, norms): G[i][k] = <x_i - c, x_k - c>, norms[i] = ||x_i - c||. c: the per-coordinate mean of the
    finite entries (center=True; 0 where a coordinate has none), zero (False) or the given vector."""
    X = np.asarray(X, np.float64)
    if center is True:
        fin = np.isfinite(X)
        cnt = fin.sum(axis=0)
        s = np.where(fin, X, 0.0).sum(axis=0)
        c = np.where(cnt > 0, s / np.maximum(cnt, 1), 0.0)
    elif center is False:
        c = np.zeros(X.shape[1])
    else:
        c = np.asarray(center, np.float64).reshape(-1)
    Y = X - c
    with np.errstate(invalid="ignore", over="ignore"):
        G = Y @ Y.T
    return G, np.sqrt(np.abs(np.diag(G)))


def combine(X, W):
    W = np.asarray(W, np.float64)
    X = np.asarray(X, np.float64)
    out = np.zeros((W.shape[0], X.shape[1]))
    for r in range(W.shape[0]):
        for i in range(X.shape[0]):
            if W[r, i] != 0:
                out[r] += W[r, i] * X[i]
    return out


def krum_scores(X, f, neighbors="n-f-2"):
    n = X.shape[0]
    k = n - f - 2 if neighbors == "n-f-2" else n - f - 1
    D = sqdist(X)
    scores = np.full(n, np.inf)
    for i in range(n):
        if _bad(X)[i]:
            continue
        others = sorted(D[i, j] for j in range(n) if j != i)
        scores[i] = math.fsum(others[:max(k, 0)])
    return scores


def krum_select(X, f, m=1, neighbors="n-f-2"):
    scores = krum_scores(X, f, neighbors)
    order = sorted(range(X.shape[0]), key=lambda i: (scores[i], i))
    return order[:m]


def krum(X, f, m=1, neighbors="n-f-2", reduce="mean"):
    X = np.asarray(X, np.float64)
    sel = krum_select(X, f, m, neighbors)
    if reduce == "none":
        return X[sel]
    return X[sel].mean(axis=0)


def coordinate_median(X):
    X = np.asarray(X, np.float64)
    return np.median(X[~_bad(X)], axis=0)


def geometric_median(X, nu=1e-6, max_iter=100, tol=1e-6, weights=None, start="median"):
    """Smoothed Weiszfeld (RFA): beta_i = w_i / max(nu, ||x_i - z||), z <- sum beta_i x_i / sum beta_i;
    stops after max_iter steps or once ||z_new - z|| <= tol * (sum_i w_i ||x_i - z_new||) / sum_i w_i."""
    X = np.asarray(X, np.float64)
    n, d = X.shape
    bad = _bad(X)
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64).copy()
    w[bad] = 0.0
    good = ~bad
    if isinstance(start, str) and start == "median":
        z = coordinate_median(X)
    elif isinstance(start, str) and start == "zero":
        z = np.zeros(d)
    else:
        z = np.asarray(start, np.float64).reshape(-1)
    for _ in range(max_iter):
        dist = np.array([np.linalg.norm(X[i] - z) if good[i] else np.inf for i in range(n)])
        beta = np.where(good, w / np.maximum(nu, dist), 0.0)
        z_new = (beta[good, None] * X[good]).sum(axis=0) / beta.sum()
        step = np.linalg.norm(z_new - z)
        z = z_new
        obj = sum(w[i] * np.linalg.norm(X[i] - z) for i in range(n) if good[i]) / w.sum()
        if step <= tol * obj:
            break
    return z


def centered_clipping(X, center, tau, iters=1):
    """v <- v + (1/n) sum_i (x_i - v) min(1, tau / ||x_i - v||) (a bad row adds nothing), iters times."""
    X = np.asarray(X, np.float64)
    n = X.shape[0]
    bad = _bad(X)
    v = np.asarray(center, np.float64).reshape(-1).copy()
    for _ in range(iters):
        step = np.zeros_like(v)
        for i in range(n):
            if bad[i]:
                continue
            diff = X[i] - v
            norm = np.linalg.norm(diff)
            step += diff * (1.0 if norm == 0 else min(1.0, tau / norm))
        v = v + step / n
    return v


def nnm_matrix(X, f):
    """M (n x n): row i averages the n - f nearest neighbours of x_i (itself included; ties to the lower
    index). A bad row's neighbours are the n - f lowest-index good rows."""
    X = np.asarray(X, np.float64)
    n = X.shape[0]
    bad = _bad(X)
    D = sqdist(X)
    M = np.zeros((n, n))
    for i in range(n):
        if bad[i]:
            nb = [j for j in range(n) if not bad[j]][: n - f]
        else:
            dist = [0.0 if j == i else D[i, j] for j in range(n)]
            nb = sorted(range(n), key=lambda j: (dist[j], j))[: n - f]
        M[i, nb] = 1.0 / (n - f)
    return M


def nnm(X, f):
    return combine(X, nnm_matrix(X, f))


def bucketing_permutation(n, seed):
    return np.random.Generator(np.random.PCG64(seed)).permutation(n)


def bucketing(X, s, seed=0):
    """The means of the buckets of s consecutive workers of a seeded random permutation (the last bucket
    may hold fewer); ceil(n / s) rows."""
    X = np.asarray(X, np.float64)
    perm = bucketing_permutation(X.shape[0], seed)
    return np.stack([X[perm[b:b + s]].mean(axis=0) for b in range(0, X.shape[0], s)])


def clip(X, c):
    """x_i min(1, c / ||x_i||); a bad row becomes a zero row."""
    X = np.asarray(X, np.float64)
    out = np.zeros_like(X)
    for i in range(X.shape[0]):
        if _bad(X)[i]:
            continue
        norm = np.linalg.norm(X[i])
        out[i] = X[i] * (1.0 if norm <= c else c / norm)
    return out


def arc(X, f):
    """Adaptive robust clipping (Allouah et al. 2024, as in ByzFL): k = floor(2 (f / n) (n - f)); the k
    largest-norm rows are clipped to the (k+1)-th largest norm (bad rows count as the largest, and become
    zero rows)."""
    X = np.asarray(X, np.float64)
    n = X.shape[0]
    bad = _bad(X)
    norms = np.array([np.inf if bad[i] else np.linalg.norm(X[i]) for i in range(n)])
    k = int(math.floor(2 * (f / n) * (n - f)))
    order = sorted(range(n), key=lambda i: (-norms[i], i))
    if k >= n:
        return np.zeros_like(X)
    c = norms[order[k]]
    return clip(X, c) if np.isfinite(c) else np.where(bad[:, None], 0.0, X)


def bulyan(X, f, theta="n-2f"):
    """theta rounds of Krum (each on the rows not yet selected, with n_r - f - 2 neighbours, at least 0),
    then per coordinate the mean of the beta = theta - 2f selected values nearest their median (even
    count: the mean of the two middle values; a tie in distance keeps the larger value)."""
    X = np.asarray(X, np.float64)
    n = X.shape[0]
    t = n - 2 * f if theta == "n-2f" else n - 2 * f - 2
    remaining = list(range(n))
    D = sqdist(X)
    chosen = []
    for _ in range(t):
        k = max(len(remaining) - f - 2, 0)
        best = None
        for i in remaining:
            if _bad(X)[i]:
                score = np.inf
            else:
                score = math.fsum(sorted(D[i, j] for j in remaining if j != i)[:k])
            if best is None or score < best[0]:
                best = (score, i)
        chosen.append(best[1])
        remaining.remove(best[1])
    S = X[sorted(chosen)]
    beta = t - 2 * f
    med = np.median(S, axis=0)
    out = np.empty(X.shape[1])
    for j in range(X.shape[1]):
        col = S[:, j]
        order = sorted(range(t), key=lambda i: (abs(col[i] - med[j]), -col[i]))
        out[j] = col[order[:beta]].mean()
    return out


def mda(X, f):
    """The mean of the (n - f)-subset of smallest diameter (max pairwise squared distance); ties to the
    smallest sum of pairwise squared distances, then to the lexicographically first subset
    (itertools.combinations order)."""
    X = np.asarray(X, np.float64)
    n = X.shape[0]
    D = sqdist(X)
    best, best_set = (np.inf, np.inf), None
    for S in itertools.combinations(range(n), n - f):
        pairs = [D[i, k] for i, k in itertools.combinations(S, 2)]
        key = (max(pairs, default=0.0), math.fsum(pairs))
        if any(not np.isfinite(D[i, i]) for i in S):
            key = (np.inf, np.inf)
        if best_set is None or key < best:
            best, best_set = key, S
    return X[list(best_set)].mean(axis=0)


def _top_left(A, r):
    U, s, _ = np.linalg.svd(A, full_matrices=False)
    return U[:, :r]


def flag(X, r=1, lam=0.0, iters=1, eps=1e-7):
    """Flag Aggregator (Almasi et al.; hamidralmasi/FlagAggregator): g_i = x_i / ||x_i|| (0 for a zero or
    bad row); Y0 = the flag mean (top-r left singular vectors of [g_i]); each IRLS step weighs
    w_i = (|1 - ||Y^T g_i||^2| + eps)^(-1/4) and, for lam > 0, every ordered pair i != j
    w_ij = (|1 - ||Y^T (g_i - g_j)||^2| + eps)^(-1/4) lam / (n (n - 1)), and takes Y = the top-r left singular
    vectors of [w_i g_i, w_ij (g_i - g_j)]. Output (1/r) sum_i Y Y^T g_i."""
    X = np.asarray(X, np.float64)
    n, d = X.shape
    bad = _bad(X)
    g = np.zeros_like(X)
    for i in range(n):
        norm = 0.0 if bad[i] else np.linalg.norm(X[i])
        if norm > 0:
            g[i] = X[i] / norm
    Y = _top_left(g.T, r)
    for _ in range(iters):
        cols = []
        for i in range(n):
            s = abs(1.0 - np.sum((Y.T @ g[i]) ** 2))
            cols.append((s + eps) ** -0.25 * g[i])
        if lam > 0 and n > 1:
            for i in range(n):
                for j in range(n):
                    if i != j:
                        diff = g[i] - g[j]
                        s = abs(1.0 - np.sum((Y.T @ diff) ** 2))
                        cols.append((s + eps) ** -0.25 * lam / (n * (n - 1)) * diff)
        Y = _top_left(np.stack(cols, axis=1), r)
    return (Y @ (Y.T @ g.sum(axis=0))) / r
