"""mean(X, weights): the (weighted) average of the workers' updates."""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _backend, _eager, _torch_ops
from ._inputs import Updates, finish, from_parts, output, updates


def _mean_run(u: Updates, weights: list[float]):
    out = output(u)
    u.module().aggregate_mean(u.parts, u.n, weights, out, u.stream())
    return finish(u, out)


def _mean_kernel(parts, stacked: bool, weights):
    return _mean_run(from_parts(parts, stacked), list(weights or []))


def _fake_out(parts, stacked):
    first = parts[0]
    return first.new_empty(first.shape[1:] if stacked else first.shape)


def _mean_fake(parts, stacked, weights):
    return _fake_out(parts, stacked)


def _mean_setup(ctx, inputs, output):
    parts, stacked, weights = inputs
    ctx.stacked, ctx.n = stacked, (parts[0].shape[0] if stacked else len(parts))
    ctx.weights = list(weights) if weights else [1.0] * ctx.n


def _mean_backward(ctx, grad):
    torch = _torch_ops.torch
    total = math.fsum(ctx.weights)
    scale = [w / total for w in ctx.weights]
    if ctx.stacked:
        s = torch.tensor(scale, dtype=grad.dtype, device=grad.device).reshape((-1,) + (1,) * grad.dim())
        return [s * grad.unsqueeze(0)], None, None
    return [grad * c for c in scale], None, None


_mean_op = _torch_ops.define("mean", "(Tensor[] X, bool stacked, float[]? weights) -> Tensor", _mean_kernel,
                             _mean_fake, backward=_mean_backward, setup_context=_mean_setup)


def _weights(weights, n: int) -> list[float]:
    if weights is None:
        return []
    if _backend.is_torch(weights) or hasattr(weights, "__array__") or hasattr(weights, "get"):
        if _backend.is_torch(weights):
            weights = weights.detach().cpu().to(dtype=_torch_ops.torch.float64).numpy()
        elif hasattr(weights, "get") and not isinstance(weights, np.ndarray):  # cupy
            weights = weights.get()
        w = np.asarray(weights)
        if w.ndim != 1:
            raise ValueError(f"weights: expected a 1-D sequence of {n} numbers, got shape {w.shape}")
        values = [float(v) for v in w.astype(np.float64)]
    else:
        values = []
        for v in weights:
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"weights: expected real numbers, got {type(v).__name__}")
            values.append(float(v))
    if len(values) != n:
        raise ValueError(f"weights: expected {n} weights (one per update), got {len(values)}")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError("weights: expected finite values >= 0")
    if not math.fsum(values) > 0:
        raise ValueError("weights: expected a positive sum")
    return values


def mean(X, weights=None):
    """The (weighted) mean of the updates: sum_i w_i x_i / sum_i w_i, per coordinate.

    X: an (n, *shape) array or a list/tuple of n arrays of one shape (see ``commkernels.aggregate``),
    read without stacking. weights (optional): n finite numbers >= 0 with a positive sum (a sequence, or
    an array of any framework: read back to the host). Accumulated in float32 (float64 for float64 X),
    worker by worker in index order, then rounded once to X's dtype: deterministic whatever the thread
    count. Not robust: a non-finite value from any worker with a non-zero weight reaches the result.
    Differentiable for torch tensors. Returns an array of the update's shape, X's framework, dtype, device.
    """
    u = updates(X)
    w = _weights(weights, u.n)
    if u.framework == "torch":
        if not u.through_op():  # what the op would do, without its cost
            out = output(u)
            u.module().aggregate_mean([_eager.dl(p) for p in u.parts], u.n, w, _eager.dl(out), u.stream())
            return out.reshape(u.shape)
        return _mean_op(u.parts, u.stacked, w or None)
    return _mean_run(u, w)
