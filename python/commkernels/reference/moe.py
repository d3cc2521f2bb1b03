"""NumPy float64 references of commkernels.moe's route, plan, permute and combine (shared/specs/moe.md).

Written from the definitions (DeepSeek-V3's routing, Megatron-Core's drop policies, vLLM's padded block
layout), row by row and expert by expert, for clarity rather than speed.
"""

from __future__ import annotations

import numpy as np

RENORM_EPS = 1e-20


def scores(logits, score: str) -> np.ndarray:
    """Per-expert scores in float64: softmax over each row, sigmoid, or sqrt(softplus)."""
    l = np.asarray(logits, dtype=np.float64)
    if score == "softmax":
        e = np.exp(l - l.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if score == "sigmoid":
        return 1.0 / (1.0 + np.exp(-l))
    if score == "sqrtsoftplus":
        return np.sqrt(np.logaddexp(0.0, l))
    raise ValueError(score)


def route_weights(logits, ids, score="softmax", order="pre", renormalize=True, scale=1.0) -> np.ndarray:
    """The weights of the experts ``ids`` [T, k] chosen for each row (the selection given)."""
    l = np.asarray(logits, dtype=np.float64)
    ids = np.asarray(ids, dtype=np.int64)
    chosen = np.take_along_axis(l, ids, axis=1)
    if score == "softmax" and (order == "post" or renormalize):
        e = np.exp(chosen - chosen.max(axis=1, keepdims=True))
        w = e / e.sum(axis=1, keepdims=True)
    elif score == "softmax":
        w = np.take_along_axis(scores(l, "softmax"), ids, axis=1)
    else:
        w = np.take_along_axis(scores(l, score), ids, axis=1)
        if renormalize:
            w = w / (w.sum(axis=1, keepdims=True) + RENORM_EPS)
    return w * scale


def route(logits, k, score="softmax", order="pre", renormalize=True, bias=None, n_group=None, topk_group=None,
          scale=1.0, details=False):
    """(weights [T, k] float64, ids [T, k] int64): DeepSeek-V3-style routing.

    The key that picks is the logit itself without bias and groups, else score + bias. With groups, a group's
    score is the sum of its two largest keys (one when groups have one expert); the topk_group best groups
    are eligible, the rest are excluded (-inf). The k best eligible keys win, ties to the lower id; ids best
    first. details=True also returns, per row, the sorted eligible keys and the sorted group scores (so a
    test can tell a near tie from an error).
    """
    l = np.asarray(logits, dtype=np.float64)
    tokens, experts = l.shape
    if bias is None and n_group is None:
        key = l
    else:
        key = scores(l, score) + (0.0 if bias is None else np.asarray(bias, dtype=np.float64))
    ids = np.zeros((tokens, k), dtype=np.int64)
    row_keys, row_groups = [], []
    for t in range(tokens):
        eligible = list(range(experts))
        groups_sorted = np.array([])
        if n_group is not None:
            size = experts // n_group
            group_score = []
            for g in range(n_group):
                top = sorted(key[t, g * size:(g + 1) * size], reverse=True)[:2]
                group_score.append(sum(top))
            ranked = sorted(range(n_group), key=lambda g: (-group_score[g], g))
            kept = set(ranked[:topk_group])
            eligible = [e for e in eligible if e // size in kept]
            groups_sorted = np.array([group_score[g] for g in ranked])
        ranked_e = sorted(eligible, key=lambda e: (-key[t, e], e))
        ids[t] = ranked_e[:k]
        row_keys.append(np.array([key[t, e] for e in ranked_e]))
        row_groups.append(groups_sorted)
    weights = route_weights(l, ids, score, order, renormalize, scale)
    if details:
        return weights, ids, row_keys, row_groups
    return weights, ids


def num_rows(tokens, k, num_experts, capacity=None, align=1) -> int:
    if capacity is not None:
        return num_experts * (-(-capacity // align) * align)
    return tokens * k + (num_experts * (align - 1) if align > 1 else 0)


def plan(ids, num_experts, capacity=None, drop_policy="position", align=1, weights=None) -> dict:
    """counts, offsets, row_of, src_of, block_expert (see commkernels.moe.Plan), by lists per expert."""
    ids = np.asarray(ids, dtype=np.int64)
    tokens, k = ids.shape
    pairs = ids.reshape(-1)
    if pairs.size and (pairs.min() < 0 or pairs.max() >= num_experts):
        raise ValueError("ids out of range")
    w = None if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    kept = []
    for e in range(num_experts):
        mine = [i for i in range(pairs.size) if pairs[i] == e]  # token order, then slot order
        if capacity is not None and len(mine) > capacity:
            if drop_policy == "position":
                mine = mine[:capacity]
            else:
                best = sorted(mine, key=lambda i: (-w[i], i))[:capacity]
                mine = sorted(best)
        kept.append(mine)
    rows = num_rows(tokens, k, num_experts, capacity, align)
    offsets = np.zeros(num_experts + 1, dtype=np.int64)
    for e in range(num_experts):
        if capacity is not None:
            offsets[e + 1] = (e + 1) * (-(-capacity // align) * align)
        else:
            offsets[e + 1] = offsets[e] + -(-len(kept[e]) // align) * align
    src_of = np.full(rows, tokens * k, dtype=np.int64)
    row_of = np.full(tokens * k, -1, dtype=np.int64)
    for e in range(num_experts):
        for n, i in enumerate(kept[e]):
            src_of[offsets[e] + n] = i
            row_of[i] = offsets[e] + n
    block_expert = None
    if align > 1:
        block_expert = np.full(rows // align, -1, dtype=np.int64)
        for e in range(num_experts):
            block_expert[offsets[e] // align:offsets[e + 1] // align] = e
    return {"counts": np.array([len(m) for m in kept], dtype=np.int64), "offsets": offsets,
            "row_of": row_of.reshape(tokens, k), "src_of": src_of, "block_expert": block_expert}


def permute(x, src_of, k, weights=None) -> np.ndarray:
    """out[r] = x[src_of[r] // k] (* weights of that pair); zeros where src_of is the sentinel T*k."""
    x = np.asarray(x, dtype=np.float64)
    tokens = x.shape[0]
    out = np.zeros((len(src_of), x.shape[1]))
    flat_w = None if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    for r, s in enumerate(np.asarray(src_of)):
        if s != tokens * k:
            out[r] = x[s // k] * (1.0 if flat_w is None else flat_w[s])
    return out


def combine(y, row_of, weights=None) -> np.ndarray:
    """out[t] = sum over j with row_of[t, j] >= 0 of weights[t, j] * y[row_of[t, j]]."""
    y = np.asarray(y, dtype=np.float64)
    row_of = np.asarray(row_of)
    tokens, k = row_of.shape
    out = np.zeros((tokens, y.shape[1]))
    for t in range(tokens):
        for j in range(k):
            if row_of[t, j] >= 0:
                out[t] += y[row_of[t, j]] * (1.0 if weights is None else float(np.asarray(weights)[t, j]))
    return out
