"""NumPy float64 references of commkernels.attacks: honest statistics, the attacks, the ALIE z and the
robustness score. Written from the papers: ALIE (Baruch, Baruch, Goldberg 2019), IPM (Xie, Koyejo, Gupta
2020), and the score of shared/specs/aggregate.md."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np


def honest_mean_std(H) -> tuple[np.ndarray, np.ndarray]:
    H = np.asarray(H, np.float64)
    return H.mean(axis=0), H.std(axis=0, ddof=1)


def alie_z(n: int, f: int) -> float:
    """Baruch et al. 2019: s = floor(n/2 + 1) - f supporters needed; z = Phi^{-1}((n - s) / n)."""
    s = math.floor(n / 2 + 1) - f
    return NormalDist().inv_cdf((n - s) / n)


def sign_flip(H) -> np.ndarray:
    return -honest_mean_std(H)[0]


def ipm(H, tau: float) -> np.ndarray:
    return -tau * honest_mean_std(H)[0]


def alie(H, tau: float) -> np.ndarray:
    mean, std = honest_mean_std(H)
    return mean + tau * std


def robustness_score(F, X, honest) -> float:
    """||F - mean_H||^2 / (sigma_H^2 / |H|), sigma_H^2 = sum_j var_H(j) (ddof 1) = the honest updates'
    total variance: sum_{i in H} ||x_i - mean_H||^2 / (|H| - 1)."""
    X = np.asarray(X, np.float64).reshape(len(X), -1)
    H = X[np.asarray(honest)]
    mean = H.mean(axis=0)
    sigma2 = float(np.sum((H - mean) ** 2)) / (len(H) - 1)
    dev = np.asarray(F, np.float64).reshape(-1) - mean
    return float(dev @ dev) / (sigma2 / len(H))
