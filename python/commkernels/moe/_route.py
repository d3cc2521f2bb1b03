"""route: scores, top-k expert selection and weights per token (softmax, sigmoid / DeepSeek-V3, groups, bias)."""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _backend, _checks, _eager, _torch_ops

SCORES = {"softmax": 0, "sigmoid": 1, "sqrtsoftplus": 2}
RENORM_EPS = 1e-20  # added to the sum of sigmoid-type weights when renormalising (as Megatron-Core)
_MAX = (1 << 31) - 1


def acc_dtype(dtype: str) -> str:
    return "float64" if dtype == "float64" else "float32"


def _shape(a):
    return tuple(a.shape)


def cast(a, dtype: str):
    """a in dtype, in its own framework (a copy only when the dtype differs)."""
    if _backend.dtype_name(a) == dtype:
        return a
    if _backend.is_torch(a):
        return a.to(getattr(_torch_ops.torch, dtype))
    if _backend.framework(a, "a") == "jax":
        return np.asarray(a).astype(dtype)
    return a.astype(dtype)


def _route_kernel(logits, k, score, post, renormalize, bias, n_group, topk_group, scale):
    tokens, experts = _shape(logits)
    acc = acc_dtype(_backend.dtype_name(logits))
    weights, ids = _backend.empty(logits, tokens * k, acc), _backend.empty(logits, tokens * k, "int32")
    _backend.module(logits).moe_route(logits, tokens, experts, k, SCORES[score], post, renormalize, bias, n_group,
                                      topk_group, scale, weights, ids, _backend.stream(logits))
    return _backend.finish(logits, weights.reshape(tokens, k)), _backend.finish(logits, ids.reshape(tokens, k))


def _route_fake(logits, k, score, post, renormalize, bias, n_group, topk_group, scale):
    torch = _torch_ops.torch
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    tokens = logits.shape[0]
    return logits.new_empty((tokens, k), dtype=acc), logits.new_empty((tokens, k), dtype=torch.int32)


def _route_setup(ctx, inputs, output):
    logits, k, score, post, renormalize, bias, n_group, topk_group, scale = inputs
    ctx.score, ctx.post, ctx.renormalize, ctx.scale = score, post, renormalize, scale
    ctx.save_for_backward(logits, output[1])


def route_logits_grad(logits, ids, grad_weights, score: str, post: bool, renormalize: bool, scale: float):
    """d loss / d logits given d loss / d weights, in torch ops (the selection is piecewise constant)."""
    torch = _torch_ops.torch
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    lg = logits.to(acc)
    g = grad_weights.to(acc) * scale
    ids = ids.long()
    chosen = lg.gather(1, ids)
    if score == "softmax" and not (post or renormalize):  # w = scale * softmax(l) at ids
        p = torch.softmax(lg, dim=1)
        dense = torch.zeros_like(lg).scatter(1, ids, g)
        return (p * (dense - (dense * p).sum(1, keepdim=True))).to(logits.dtype)
    if score == "softmax":  # w = scale * softmax of the chosen logits
        q = torch.softmax(chosen, dim=1)
        d = q * (g - (g * q).sum(1, keepdim=True))
    else:
        if score == "sigmoid":
            s = torch.sigmoid(chosen)
            ds = s * (1 - s)
        else:
            sp = torch.nn.functional.softplus(chosen)
            s = sp.sqrt()
            ds = torch.sigmoid(chosen) / (2 * s)
        if renormalize:
            total = s.sum(1, keepdim=True) + RENORM_EPS
            d = (g - (g * s).sum(1, keepdim=True) / total) / total * ds
        else:
            d = g * ds
    return torch.zeros_like(lg).scatter(1, ids, d).to(logits.dtype)


def _route_backward(ctx, grad_weights, grad_ids):
    logits, ids = ctx.saved_tensors
    if grad_weights is None:
        grad = None
    else:
        grad = route_logits_grad(logits, ids, grad_weights, ctx.score, ctx.post, ctx.renormalize, ctx.scale)
    return (grad,) + (None,) * 8


_route_op = _torch_ops.define(
    "moe_route",
    "(Tensor logits, int k, str score, bool post, bool renormalize, Tensor? bias, int n_group, int topk_group, "
    "float scale) -> (Tensor, Tensor)",
    _route_kernel, _route_fake, backward=_route_backward, setup_context=_route_setup)


def route(logits, k: int, score: str = "softmax", order: str = "pre", renormalize: bool = True, bias=None,
          n_group: int | None = None, topk_group: int | None = None, scale: float = 1.0):
    """Top-k expert routing: (weights [T, k], ids [T, k] int32) for logits [T, E].

    Per token row, in float32 (float64 for float64 logits) whatever the logits' dtype:

    - score "softmax": p = softmax(logits) (order "pre"); order "post" takes the top-k logits first and the
      weights are the softmax over those k. "sigmoid" (DeepSeek-V3): s = sigmoid(logits).
      "sqrtsoftplus": s = sqrt(softplus(logits)).
    - selection: without bias and groups the experts with the k largest logits (every score is monotone in
      the logit, so this is the top-k of the scores, exact in any precision). With ``bias`` [E] (aux-loss-free
      balancing) the key is score + bias: the bias picks, the unbiased score weighs. With ``n_group`` /
      ``topk_group`` (DeepSeek-V3 group-limited routing) the experts form n_group contiguous groups; a group's
      score is the sum of its top min(2, E / n_group) keys; only the topk_group best groups are eligible
      (the others count as -inf, never as 0: an excluded expert is never picked over an eligible one).
    - ties: the larger key first, then the lower expert id; NaN counts as the largest. The k ids of a row
      come best first.
    - weights: the score at the chosen ids (softmax "pre": p), renormalised to sum to 1 over the k when
      ``renormalize`` (softmax: exactly the softmax of the chosen logits; sigmoid-type: divided by the sum
      + 1e-20, as Megatron-Core), then times ``scale``. Order "post" is always normalised.

    One pass over each row, no sort of the row: on the CPU (OpenMP over rows) the k best are kept in a
    small sorted array (a partial sort of the candidates when k > 32); on the GPU a warp per row takes k
    rounds of a warp-wide argmax. Differentiable w.r.t. logits for torch tensors (bias is a buffer, not differentiated).

    logits: [T, E] float32, float64, float16 or bfloat16, contiguous; any E >= 1 (no power-of-two limit).
    k: 1 <= k <= E (and k <= topk_group * E / n_group with groups). bias: [E] float array, same framework and
    device (cast to the score dtype). n_group: a divisor of E; topk_group: 1..n_group (both or neither).
    """
    te = _eager.float_matrix(logits)
    if (te is not None and bias is None and n_group is None and topk_group is None and order == "pre"
            and type(score) is str and score in SCORES and type(renormalize) is bool
            and _eager.small_int(k, 1, te[1]) and te[0] * k <= _MAX and type(scale) is float
            and math.isfinite(scale) and _eager.plain_cpu(logits, differentiable=(logits,))):
        return _route_eager(logits, k, score, False, renormalize, None, 0, 0, scale)  # checks as below, passed
    _checks.float_array(logits, "logits")
    shape = _shape(logits)
    if len(shape) != 2:
        raise ValueError(f"logits: expected a [T, E] array, got shape {shape}")
    tokens, experts = shape
    if experts < 1:
        raise ValueError("logits: expected E >= 1 experts (columns)")
    k = _checks.integer(k, "k", 1, experts)
    _checks.integer(tokens * k, "T * k", 0, _MAX)
    if score not in SCORES:
        raise ValueError(f"score: expected one of {', '.join(SCORES)}, got {score!r}")
    if order not in ("pre", "post"):
        raise ValueError(f"order: expected 'pre' or 'post', got {order!r}")
    if not isinstance(renormalize, (bool, np.bool_)):
        raise TypeError(f"renormalize: expected a bool, got {type(renormalize).__name__}")
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(float(scale)):
        raise ValueError(f"scale: expected a finite real number, got {scale!r}")
    if (n_group is None) != (topk_group is None):
        raise ValueError("n_group, topk_group: give both or neither")
    if n_group is not None:
        n_group = _checks.integer(n_group, "n_group", 1, experts)
        if experts % n_group:
            raise ValueError(f"n_group: expected a divisor of E = {experts}, got {n_group}")
        topk_group = _checks.integer(topk_group, "topk_group", 1, n_group)
        if k > topk_group * (experts // n_group):
            raise ValueError(f"k: expected k <= topk_group * E / n_group = {topk_group * (experts // n_group)}")
    acc = acc_dtype(_backend.dtype_name(logits))
    if bias is not None:
        _checks.same_place(logits, bias, "logits", "bias")
        _checks.float_array(bias, "bias")
        if _shape(bias) != (experts,):
            raise ValueError(f"bias: expected shape ({experts},), got {_shape(bias)}")
        bias = cast(bias.detach() if _backend.is_torch(bias) else bias, acc)
    post = order == "post"
    if post and (score != "softmax" or bias is not None or n_group is not None):
        raise ValueError("order: 'post' (top-k, then softmax over the k) needs score='softmax', no bias, no groups")
    args = (logits, k, score, post, bool(renormalize), bias, n_group or 0, topk_group or 0, float(scale))
    if not _backend.is_torch(logits):
        return _route_kernel(*args)
    if _eager.plain_cpu(logits, bias, differentiable=(logits,)):
        return _route_eager(*args)
    return _route_op(*args)


def _route_eager(logits, k, score, post, renormalize, bias, n_group, topk_group, scale):
    """_route_kernel for plain CPU torch tensors (see _eager): no dispatcher, capsules for nanobind."""
    torch = _torch_ops.torch
    tokens, experts = logits.shape
    weights = torch.empty((tokens, k), dtype=torch.float64 if logits.dtype == torch.float64 else torch.float32)
    ids = torch.empty((tokens, k), dtype=torch.int32)
    dl = _eager.dl
    _backend._cpu.moe_route(dl(logits), tokens, experts, k, SCORES[score], post, renormalize, dl(bias), n_group,
                            topk_group, scale, dl(weights), dl(ids), 0)
    return weights, ids
