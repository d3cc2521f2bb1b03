"""Expert-choice routing (Zhou et al. 2022, arXiv 2202.09368): experts pick tokens, not tokens experts."""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import _backend, _checks, _eager, _torch_ops
from ._balance import _acc, _matrix


class ExpertChoice(NamedTuple):
    """``token_ids[e, c]`` (int32) is the c-th best token of expert e; ``weights[e, c]`` its probability
    softmax(scores)[token, e] (float32, where probabilities below e^-87 ~ 1.6e-38 are 0; float64 for float64
    scores). Both [E, capacity]."""

    weights: Any
    token_ids: Any


def _kernel(scores, capacity: int):
    T, E = int(scores.shape[0]), int(scores.shape[1])
    weights = _backend.empty(scores, E * capacity, _acc(scores))
    ids = _backend.empty(scores, E * capacity, "int32")
    _backend.module(scores).moe_expert_choice(scores, T, E, capacity, weights, ids, _backend.stream(scores))
    return (_backend.finish(scores, weights.reshape(E, capacity)), _backend.finish(scores, ids.reshape(E, capacity)))


def _fake(scores, capacity):
    torch = _torch_ops.torch
    acc = torch.float64 if scores.dtype == torch.float64 else torch.float32
    E = scores.shape[1]
    return scores.new_empty((E, capacity), dtype=acc), scores.new_empty((E, capacity), dtype=torch.int32)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], output[1])


def _backward(ctx, grad_weights, grad_ids):
    # weights[e, c] = S[t, e] with t = token_ids[e, c], S = softmax(scores); a token appears at most once
    # per expert, so G[t, e] collects at most one gradient: no accumulation order to fix.
    torch = _torch_ops.torch
    scores, ids = ctx.saved_tensors
    T, E = scores.shape
    acc = grad_weights.dtype
    S = torch.softmax(scores.to(acc), dim=1)
    G = torch.zeros((T, E), dtype=acc, device=scores.device)
    experts = torch.arange(E, device=scores.device).unsqueeze(1).expand_as(ids)
    G[ids.long(), experts] = grad_weights
    grad = S * (G - (G * S).sum(dim=1, keepdim=True))
    return grad.to(scores.dtype), None


_op = _torch_ops.define("moe_expert_choice", "(Tensor scores, int capacity) -> (Tensor, Tensor)", _kernel, _fake,
                        backward=_backward, setup_context=_setup)


def expert_choice(scores, capacity: int) -> ExpertChoice:
    """Each expert takes its ``capacity`` best tokens of S = softmax(scores) over the experts.

    Token t ranks for expert e by its log-probability (scores[t, e] - max_t) - log(sum_j exp(scores[t, j]
    - max_t)), computed in float32 (float64 for float64 scores; the same bits on the CPU and the GPU for
    float32, float16 and bfloat16): best first, ties to the lower token index; a token whose scores hold a
    NaN ranks above every number. A token may be taken by several experts or by none. No full sort: each
    expert keeps a buffer of candidates pruned to its best C with nth_element (CPU, O(T) per expert) or
    radix-selects them (GPU).

    scores: [T, E] float32, float64, float16 or bfloat16 router logits, contiguous, E >= 1.
    capacity: 0 <= capacity <= T (e.g. ``capacity(T, k, E, factor)``, the paper's k = T c / E).
    Returns ExpertChoice(weights, token_ids), both [E, capacity]. Differentiable w.r.t. scores through the
    weights (torch).
    """
    te = _eager.float_matrix(scores)
    if te is not None and _eager.small_int(capacity, 0, te[0]) and _eager.plain_cpu(scores, differentiable=(scores,)):
        return ExpertChoice(*_eager_kernel(scores, capacity))  # the checks below, passed
    T, _ = _matrix(scores, "scores")
    capacity = _checks.integer(capacity, "capacity", 0, T)
    if not _backend.is_torch(scores):
        kernel = _kernel
    else:
        kernel = _eager_kernel if _eager.plain_cpu(scores, differentiable=(scores,)) else _op
    weights, ids = kernel(scores, capacity)
    return ExpertChoice(weights, ids)


def _eager_kernel(scores, capacity: int):
    """_kernel for plain CPU torch tensors (see _eager)."""
    torch = _torch_ops.torch
    T, E = scores.shape
    weights = torch.empty((E, capacity), dtype=torch.float64 if scores.dtype == torch.float64 else torch.float32)
    ids = torch.empty((E, capacity), dtype=torch.int32)
    dl = _eager.dl
    _backend._cpu.moe_expert_choice(dl(scores), T, E, capacity, dl(weights), dl(ids), 0)
    return weights, ids
