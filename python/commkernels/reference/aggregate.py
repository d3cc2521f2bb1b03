"""NumPy float64 references of the mean and the coordinate-wise rules of commkernels.aggregate.

Written from the definitions in shared/specs/aggregate.md, column by column with np.sort: simple and
obviously right, not the kernels' algorithm (selection networks). X is an (n, d) float64 array.

Order of non-finite values (the kernels' documented convention): -inf < finite < +inf < NaN, i.e. NaN
sorts as the largest value, so trimming removes it like +inf. Distances to a center: |x - c|, with NaN
the farthest; ties in distance keep the larger value (remove the smaller one first).
"""

from __future__ import annotations

import numpy as np


def _sorted_columns(X: np.ndarray) -> np.ndarray:
    return np.sort(np.asarray(X, np.float64), axis=0)  # np.sort puts NaN last: NaN is the largest


def mean(X, weights=None) -> np.ndarray:
    X = np.asarray(X, np.float64)
    w = np.ones(X.shape[0]) if weights is None else np.asarray(weights, np.float64)
    return (w[:, None] * X).sum(axis=0) / w.sum()


def median(X, even: str = "mean") -> np.ndarray:
    S = _sorted_columns(X)
    n = S.shape[0]
    lo, hi = (n - 1) // 2, n // 2
    if even == "lower" or lo == hi:
        return S[lo].copy()
    if even == "upper":
        return S[hi].copy()
    return S[lo] / 2 + S[hi] / 2


def trimmed_mean(X, f: int) -> np.ndarray:
    S = _sorted_columns(X)
    n = S.shape[0]
    return S[f:n - f].mean(axis=0)


def trim_count(n: int, fraction: float) -> int:
    """Flower's trimmed mean: int(fraction * n) values cut from each end."""
    return int(fraction * n)


def _nearest_mean(column: np.ndarray, center: float, keep: int) -> float:
    """The mean of the `keep` values of `column` nearest `center` (ties in distance: the larger value)."""
    dist = np.abs(column - center)
    dist = np.where(np.isnan(dist), np.inf, dist)
    far = np.isnan(column)  # NaN is farther than anything, inf included
    order = np.lexsort((-np.nan_to_num(column, nan=np.inf), dist, far))  # far last, then distance, then larger value
    return float(np.mean(column[order[:keep]]))


def meamed(X, f: int) -> np.ndarray:
    """Mean of the n - f values nearest the (coordinate-wise) median."""
    X = np.asarray(X, np.float64)
    n = X.shape[0]
    med = median(X)
    return np.array([_nearest_mean(X[:, j], med[j], n - f) for j in range(X.shape[1])])


def phocas(X, f: int) -> np.ndarray:
    """Mean of the n - f values nearest the (coordinate-wise) f-trimmed mean."""
    X = np.asarray(X, np.float64)
    n = X.shape[0]
    center = trimmed_mean(X, f)
    return np.array([_nearest_mean(X[:, j], center[j], n - f) for j in range(X.shape[1])])


def nearest_median_mean(X, beta: int) -> np.ndarray:
    """Bulyan's second stage: per coordinate, the mean of the beta values nearest the median."""
    X = np.asarray(X, np.float64)
    med = median(X)
    return np.array([_nearest_mean(X[:, j], med[j], beta) for j in range(X.shape[1])])
