"""NumPy float64 references of commkernels.aggregate's asynchronous averaging (_async.py).

Written from the definitions: FedAsync (Xie, Koyejo, Gupta 2019) staleness functions and mixing, FedBuff's
weighted buffer, and the variance correction of "Vanishing Variance" (Tian et al. 2024; DFL_torch's
VarianceCorrector: torch.var over a layer's elements, target = mean of the inputs' variances).
"""

from __future__ import annotations

import numpy as np


def staleness_weight(tau, kind: str = "constant", a: float | None = None, b: float | None = None) -> np.ndarray:
    t = np.asarray(tau, dtype=np.float64)
    if kind == "constant":
        return np.ones_like(t)
    if kind == "polynomial":
        a = 0.5 if a is None else a
        return np.power(1.0 + t, -a)
    a = 10.0 if a is None else a
    b = 4.0 if b is None else b
    out = np.ones_like(t)
    late = t > b
    out[late] = 1.0 / (a * (t[late] - b) + 1.0)
    return out


def buffer_add(buffer, update, weight: float) -> np.ndarray:
    return np.asarray(buffer, np.float64) + weight * np.asarray(update, np.float64)


def fedasync_mix(x, x_new, alpha: float) -> np.ndarray:
    return (1.0 - alpha) * np.asarray(x, np.float64) + alpha * np.asarray(x_new, np.float64)


def variance_corrected_mean(X, lengths, weights, eps: float = 1e-4) -> np.ndarray:
    """X: (n, d); lengths: the segments; weights: n row weights (follow: 1/n; conservative: alpha, then
    (1 - alpha)/(n - 1)). Per segment: m = sum_i w_i x_i, target = sum_i w_i var(x_i) (ddof 1),
    out = (m - mean(m)) * sqrt((target + eps) / (var(m) + eps)) + mean(m); one-element segments stay m."""
    X = np.asarray(X, np.float64)
    w = np.asarray(weights, np.float64)
    m = w @ X
    out = m.copy()
    start = 0
    for length in lengths:
        s = slice(start, start + length)
        start += length
        if length < 2:
            continue
        target = float(np.sum(w * X[:, s].var(axis=1, ddof=1)))
        mu, var = m[s].mean(), m[s].var(ddof=1)
        out[s] = (m[s] - mu) * np.sqrt((target + eps) / (var + eps)) + mu
    return out
