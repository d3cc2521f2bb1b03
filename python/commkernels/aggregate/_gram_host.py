"""The host side of the Gram route: float64 algorithms on the m x m Gram matrix (m = the number of workers,
at most a few hundred), between the gram pass and the combine pass (see _gram.py).

Every function takes G = [<x_i - c, x_k - c>] for some center c (the choice of c does not change
distances) and a mask of bad rows (non-finite diagonal: a NaN/Inf entry or an overflow), and returns
selections or weight matrices. An iterate z = c + sum_i a_i (x_i - c) is tracked by its coefficients a:
||x_k - z||^2 = G_kk - 2 (G a)_k + a^T G a, so an iteration never touches the data.
"""

from __future__ import annotations

import math

import numpy as np


def bad_rows(G) -> np.ndarray:
    return ~np.isfinite(np.diag(G))


def clean(G, bad):
    """G with the bad rows' and columns' entries zeroed (they are masked wherever they are used)."""
    G = np.array(G, dtype=np.float64)
    G[bad, :] = 0.0
    G[:, bad] = 0.0
    return G


def sqdist(G, bad):
    """Squared distances (>= 0); +inf for every pair that involves a bad row, the diagonal of a bad row too."""
    Gc = clean(G, bad)
    diag = np.diag(Gc)
    D = np.maximum(diag[:, None] + diag[None, :] - 2.0 * Gc, 0.0)
    np.fill_diagonal(D, 0.0)
    D[bad, :] = np.inf
    D[:, bad] = np.inf
    return D


class Span:
    """Points z = c + sum_i a_i (x_i - c) (a zero on bad rows), measured through G: the cleaned matrix and
    its diagonal are formed once per rule, not once per iteration (an iteration is a few n x n products)."""

    def __init__(self, G, bad):
        self.G = clean(G, bad)
        self.diag = np.diag(self.G).copy()
        self.bad = bad

    def dist_to(self, a):
        """||x_k - z|| for every k; +inf for a bad k."""
        Ga = self.G @ a
        out = np.sqrt(np.maximum(self.diag - 2.0 * Ga + float(a @ Ga), 0.0))
        out[self.bad] = np.inf
        return out

    def norm_of(self, a):
        """||sum_i a_i (x_i - c)||."""
        return math.sqrt(max(float(a @ (self.G @ a)), 0.0))


def krum_scores(D, f: int, neighbors: str, rows=None) -> np.ndarray:
    """Krum scores of `rows` (default all) among themselves: the sum of the k smallest squared distances
    to the other rows, k = n_r - f - 2 ("n-f-2") or n_r - f - 1 ("n-f-1") (at least 0); +inf for a bad
    row (an infinite distance to itself)."""
    n = D.shape[0]
    rows = np.arange(n) if rows is None else np.asarray(rows)
    k = len(rows) - f - (2 if neighbors == "n-f-2" else 1)
    k = max(k, 0)
    sub = D[np.ix_(rows, rows)].copy()
    diag_bad = ~np.isfinite(np.diag(D))[rows]
    np.fill_diagonal(sub, np.inf)  # a row is not its own neighbour
    part = np.sort(sub, axis=1)[:, :k]
    scores = np.array([math.fsum(r) if np.all(np.isfinite(r)) else math.inf for r in part])
    scores[diag_bad] = math.inf
    return scores


def lowest(scores, m: int, rows=None) -> list[int]:
    """The m rows with the lowest score, ties to the lower index (in score order)."""
    rows = np.arange(len(scores)) if rows is None else np.asarray(rows)
    order = sorted(range(len(rows)), key=lambda t: (scores[t], int(rows[t])))
    return [int(rows[t]) for t in order[:m]]


def weiszfeld(G, bad, weights, nu: float, max_iter: int, tol: float, a0=None):
    """Smoothed Weiszfeld from z0 = c + sum a0_i (x_i - c) (a0 = 0: z0 = c). Returns (a, steps)."""
    n = G.shape[0]
    w = np.asarray(weights, np.float64).copy()
    w[bad] = 0.0
    a = np.zeros(n) if a0 is None else np.asarray(a0, np.float64).copy()
    total = w.sum()
    span = Span(G, bad)
    steps = 0
    for _ in range(max_iter):
        dist = span.dist_to(a)
        beta = np.where(bad, 0.0, w / np.maximum(nu, dist))
        a_new = beta / beta.sum()
        step = span.norm_of(a_new - a)
        a = a_new
        steps += 1
        obj = float(np.dot(w[~bad], span.dist_to(a)[~bad])) / total
        if step <= tol * obj:
            break
    return a, steps


def centered_clipping(G, bad, tau: float, iters: int):
    """Coefficients a of v_T = c + sum a_i (x_i - c), from v_0 = c (G centered at the given center)."""
    n = G.shape[0]
    a = np.zeros(n)
    span = Span(G, bad)
    for _ in range(iters):
        dist = span.dist_to(a)
        with np.errstate(divide="ignore"):
            clipf = np.where(dist == 0, 1.0, np.minimum(1.0, tau / dist))
        clipf[bad] = 0.0
        a = a * (1.0 - clipf.sum() / n) + clipf / n
    return a


def nnm_matrix(D, f: int) -> np.ndarray:
    n = D.shape[0]
    bad = ~np.isfinite(np.diag(D))
    k = n - f
    good = [j for j in range(n) if not bad[j]]
    M = np.zeros((n, n))
    for i in range(n):
        if bad[i]:
            nb = good[:k] if len(good) >= k else (good + [j for j in range(n) if bad[j]])[:k]
        else:
            dist = D[i].copy()
            dist[i] = 0.0
            nb = sorted(range(n), key=lambda j: (dist[j], j))[:k]
        M[i, nb] = 1.0 / k
    return M


def bucketing_matrix(n: int, s: int, seed: int) -> np.ndarray:
    perm = np.random.Generator(np.random.PCG64(seed)).permutation(n)
    rows = []
    for b in range(0, n, s):
        r = np.zeros(n)
        idx = perm[b:b + s]
        r[idx] = 1.0 / len(idx)
        rows.append(r)
    return np.stack(rows)


def clip_scales(norms, bad, c: float) -> np.ndarray:
    """min(1, c / ||x_i||); 0 for a bad row."""
    with np.errstate(divide="ignore"):
        s = np.where(norms <= c, 1.0, c / np.where(norms > 0, norms, 1.0))
    s[bad] = 0.0
    return s


def arc_scales(norms, bad, f: int) -> np.ndarray:
    n = len(norms)
    k = int(math.floor(2 * (f / n) * (n - f)))
    if k >= n:
        return np.zeros(n)
    key = np.where(bad, np.inf, norms)
    order = sorted(range(n), key=lambda i: (-key[i], i))
    c = key[order[k]]
    if not math.isfinite(c):
        s = np.ones(n)
        s[bad] = 0.0
        return s
    return clip_scales(norms, bad, c)


def bulyan_select(D, f: int, theta: int) -> list[int]:
    """theta rounds of Krum, each among the rows not selected yet (n_r - f - 2 neighbours, at least 0)."""
    remaining = list(range(D.shape[0]))
    chosen = []
    for _ in range(theta):
        scores = krum_scores(D, f, "n-f-2", remaining)
        pick = lowest(scores, 1, remaining)[0]
        chosen.append(pick)
        remaining.remove(pick)
    return chosen


class SearchLimit(Exception):
    pass


def mda_subset(D, f: int, max_nodes: int) -> list[int]:
    """The (n - f)-subset of smallest diameter (largest pairwise squared distance); among equal diameters
    (common: the diameter is one pair's distance, shared by many subsets) the smallest sum of pairwise
    squared distances; then the lexicographically first (combinations order). Depth-first over subsets in
    lexicographic order, pruned by the best (diameter, sum) found so far: a partial subset's diameter and
    sum only grow, and only a strictly better complete subset replaces the best."""
    n = D.shape[0]
    size = n - f
    best = [math.inf, math.inf, None]
    nodes = [0]
    diag_bad = ~np.isfinite(np.diag(D))

    def worse(d, s):
        return best[2] is not None and (d > best[0] or (d == best[0] and s >= best[1]))

    def grow(chosen, start, diam, total):
        nodes[0] += 1
        if nodes[0] > max_nodes:
            raise SearchLimit
        if len(chosen) == size:
            if best[2] is None or not worse(diam, total):
                best[0], best[1], best[2] = diam, total, list(chosen)
            return
        for v in range(start, n - (size - len(chosen)) + 1):
            if diag_bad[v]:
                d_new, t_new = math.inf, math.inf
            else:
                row = [D[v, u] for u in chosen]
                d_new = max([diam] + row)
                t_new = total + math.fsum(row)
            if worse(d_new, t_new):
                continue
            chosen.append(v)
            grow(chosen, v + 1, d_new, t_new)
            chosen.pop()

    grow([], 0, 0.0, 0.0)
    return best[2] if best[2] is not None else list(range(size))


def _top(S, r: int):
    """The top-r eigenvectors of the symmetric S (largest eigenvalue first; sign fixed so that the largest
    entry is positive)."""
    vals, vecs = np.linalg.eigh((S + S.T) / 2)
    idx = np.argsort(-vals, kind="stable")[:r]
    return vecs[:, idx]


def flag(G, bad, r: int, lam: float, iters: int, eps: float, rank_tol: float):
    """Flag Aggregator on the Gram matrix of the uncentered updates. The normalised updates g_i span a
    space with an orthonormal basis in which g_i has coordinates z_i (the columns of Z = L^{1/2} Q^T for
    K = [<g_i, g_j>] = Q L Q^T): the IRLS runs exactly in those k <= n dimensions. Returns the
    coefficients of the output on the x_i."""
    n = G.shape[0]
    Gc = clean(G, bad)
    norms = np.sqrt(np.maximum(np.diag(Gc), 0.0))
    use = (~bad) & (norms > 0)
    inv = np.where(use, 1.0 / np.where(use, norms, 1.0), 0.0)
    K = Gc * inv[:, None] * inv[None, :]
    vals, Q = np.linalg.eigh((K + K.T) / 2)
    keep = vals > rank_tol * max(float(vals.max(initial=0.0)), 0.0)
    if not np.any(keep):
        return np.zeros(n)
    lam_k, Qk = vals[keep], Q[:, keep]
    Z = np.sqrt(lam_k)[:, None] * Qk.T  # k x n
    Y = _top(Z @ Z.T, r)
    for _ in range(iters):
        proj = Y.T @ Z  # r x n
        s = np.abs(1.0 - np.sum(proj * proj, axis=0))
        w = (s + eps) ** -0.25
        w = np.where(use, w, 0.0)
        S = (Z * (w * w)[None, :]) @ Z.T
        if lam > 0 and n > 1:
            diffs = Z[:, :, None] - Z[:, None, :]  # k x n x n: z_i - z_j
            p = np.einsum("ka,kij->aij", Y, diffs)
            wij = (np.abs(1.0 - np.sum(p * p, axis=0)) + eps) ** -0.25 * lam / (n * (n - 1))
            np.fill_diagonal(wij, 0.0)
            S = S + np.einsum("aij,bij,ij->ab", diffs, diffs, wij * wij)
        Y = _top(S, r)
    y = Y @ (Y.T @ Z.sum(axis=1)) / r
    coef_g = Qk @ (y / np.sqrt(lam_k))
    return coef_g * inv
