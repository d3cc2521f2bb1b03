"""NumPy float64 references for MoE capacity, balancing losses, bias balancing and expert choice.

Written from the definitions: Switch Transformer (load-balancing loss), ST-MoE (z-loss), DeepSeek-V3
(aux-loss-free bias update), expert choice routing (Zhou et al. 2022, arXiv 2202.09368), and the anchors'
capacity formulas (shared/specs/moe.md).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np


def capacity(T: int, k: int, E: int, factor, min_capacity: int = 0, align: int = 1, formula: str = "megatron") -> int:
    f = Fraction(factor) if isinstance(factor, (int, Fraction)) else Fraction(repr(float(factor)))
    if formula == "megatron":
        c = math.ceil(Fraction(T * k, E) * f)
    elif formula == "deepspeed":
        c = math.ceil(Fraction(T, E) * (f * k))
    elif formula == "tutel":
        c = k * math.floor(f * math.ceil(Fraction(T, E)))
    elif formula == "megablocks":
        c = math.floor(f * Fraction(k * T, E))
    else:
        raise ValueError(formula)
    c = max(min_capacity, c)
    return math.ceil(Fraction(c, align)) * align


def load_balancing_loss(probs: np.ndarray, ids: np.ndarray, num_experts: int, first_choice_only: bool = False) -> float:
    """Switch: E * sum_i f_i P_i, f_i the fraction of (token, slot) pairs routed to i, P_i = mean_t probs[t, i].
    With first_choice_only, f_i counts only each token's first choice (ids[:, 0]). 0 for no tokens."""
    probs = np.asarray(probs, np.float64)
    ids = np.asarray(ids, np.int64)
    T = probs.shape[0]
    if T == 0:
        return 0.0
    chosen = ids[:, :1] if first_choice_only else ids
    f = np.bincount(chosen.reshape(-1), minlength=num_experts) / chosen.size
    P = probs.mean(axis=0)
    return float(num_experts * np.sum(f * P))


def logsumexp_rows(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, np.float64)
    m = x.max(axis=1, keepdims=True) if x.shape[1] else np.zeros((x.shape[0], 1))
    m = np.where(np.isinf(m), 0.0, m)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return (np.log(np.exp(x - m).sum(axis=1, keepdims=True)) + m)[:, 0]


def z_loss(logits: np.ndarray) -> float:
    """ST-MoE: mean over tokens of logsumexp(logits_t)^2; 0 for no tokens."""
    lse = logsumexp_rows(logits)
    return float(np.mean(lse ** 2)) if lse.size else 0.0


def update_expert_bias(bias: np.ndarray, counts: np.ndarray, rate: float) -> np.ndarray:
    """DeepSeek-V3 aux-loss-free balancing: bias + rate * sign(mean(counts) - counts), over the last axis."""
    counts = np.asarray(counts, np.float64)
    mean = counts.mean(axis=-1, keepdims=True)
    return np.asarray(bias, np.float64) + rate * np.sign(mean - counts)


def softmax_rows(scores: np.ndarray) -> np.ndarray:
    x = np.asarray(scores, np.float64)
    return np.exp(x - logsumexp_rows(x)[:, None])


def expert_choice(scores: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """Expert choice: S = softmax(scores) over experts; expert e takes the `capacity` tokens with the largest
    S[:, e], in descending order, ties to the lower token index. Returns (weights [E, C], token_ids [E, C])."""
    S = softmax_rows(scores)
    T, E = S.shape
    ids = np.zeros((E, capacity), np.int64)
    for e in range(E):
        order = sorted(range(T), key=lambda t: (-S[t, e], t))
        ids[e] = order[:capacity]
    weights = np.take_along_axis(S.T, ids, axis=1) if capacity else np.zeros((E, 0))
    return weights, ids
