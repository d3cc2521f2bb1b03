"""Coordinate-wise robust rules: median, trimmed_mean, meamed, phocas (and Bulyan's second stage).

Each coordinate's n values are put in order by a sorting network run across a tile of coordinates at once
(csrc/aggregate/coord.h): one read of the data, no per-column comparison sort.

Non-finite values are ordered -inf < finite < +inf < NaN (NaN counts as the largest; -0 < +0), so trimming
removes NaN like +inf; the distance to a center is |x - c| with NaN the farthest, and ties in distance keep
the larger value. Hence with n > 2f and at most f workers sending NaN/Inf in a coordinate, trimmed_mean,
meamed and phocas stay finite there, and the median stays finite while at most (n - 1) // 2 are non-finite.
"""

from __future__ import annotations

import numbers

from .. import _torch_ops
from ._inputs import Updates, check_f, finish, from_parts, output, updates

_EVEN = ("mean", "lower", "upper")


def _run(u: Updates, rule: str, even: str, f: int):
    out = output(u)
    u.module().aggregate_coordinate_rule(u.parts, u.n, rule, even, f, out, u.stream())
    return finish(u, out)


def _fake(parts, stacked):
    first = parts[0]
    return first.new_empty(first.shape[1:] if stacked else first.shape)


def _define(rule: str, schema_args: str, kernel, fake, backward=None, setup_context=None):
    return _torch_ops.define(rule, f"(Tensor[] X, bool stacked{schema_args}) -> Tensor", kernel, fake,
                             backward=backward, setup_context=setup_context)


# Autograd of the median and the trimmed mean: the gradient goes to the selected values, found by a
# stable sort of the workers (ties between equal values go to the lower worker index; NaN sorts last,
# as in the kernels). Only the backward pass sorts, and only when a gradient is asked for.
def _rank_setup(ctx, inputs, output):
    X, stacked, arg = inputs
    ctx.stacked, ctx.count, ctx.arg = stacked, len(X), arg
    ctx.save_for_backward(*X)


def _rank_backward(ctx, grad, ranks):
    torch = _torch_ops.torch
    parts = ctx.saved_tensors
    X = parts[0] if ctx.stacked else torch.stack(parts)
    n = X.shape[0]
    flat = X.detach().reshape(n, -1)
    order = torch.sort(flat, dim=0, stable=True).indices
    g = torch.zeros(flat.shape, dtype=grad.dtype, device=grad.device)
    row = grad.reshape(1, -1)
    for rank, weight in ranks(n):
        g.scatter_add_(0, order[rank:rank + 1], row * weight)
    g = g.reshape(X.shape)
    return (list(g.unbind(0)) if not ctx.stacked else [g]), None, None


def _median_ranks(even):
    def ranks(n):
        lo, hi = (n - 1) // 2, n // 2
        if lo == hi or even == "lower":
            return [(lo, 1.0)]
        return [(hi, 1.0)] if even == "upper" else [(lo, 0.5), (hi, 0.5)]
    return ranks


def _trimmed_ranks(f):
    return lambda n: [(r, 1.0 / (n - 2 * f)) for r in range(f, n - f)]


_median_op = _define("median", ", str even", lambda X, stacked, even: _run(from_parts(X, stacked), "median", even, 0),
                     lambda X, stacked, even: _fake(X, stacked), setup_context=_rank_setup,
                     backward=lambda ctx, grad: _rank_backward(ctx, grad, _median_ranks(ctx.arg)))
_trimmed_mean_op = _define("trimmed_mean", ", int f",
                           lambda X, stacked, f: _run(from_parts(X, stacked), "trimmed_mean", "mean", f),
                           lambda X, stacked, f: _fake(X, stacked), setup_context=_rank_setup,
                           backward=lambda ctx, grad: _rank_backward(ctx, grad, _trimmed_ranks(ctx.arg)))
_meamed_op = _define("meamed", ", int f", lambda X, stacked, f: _run(from_parts(X, stacked), "meamed", "mean", f),
                     lambda X, stacked, f: _fake(X, stacked))
_phocas_op = _define("phocas", ", int f", lambda X, stacked, f: _run(from_parts(X, stacked), "phocas", "mean", f),
                     lambda X, stacked, f: _fake(X, stacked))


def _apply(u: Updates, op, rule: str, even: str, f: int):
    if u.through_op():
        return op(u.parts, u.stacked, even) if rule == "median" else op(u.parts, u.stacked, f)
    return _run(u, rule, even, f)


def median(X, even: str = "mean"):
    """The coordinate-wise median of the n updates.

    even: for an even n, "mean" (default) averages the two middle values (computed exactly, rounded once
    to X's dtype); "lower" / "upper" take one of them (Garfield takes "upper"). An odd n, "lower" and
    "upper" return an input value bit for bit. Needs n >= 1. Order of non-finite values: see the module.
    Differentiable for torch tensors: the gradient goes to the selected worker(s) (half each to the two
    middle ones for even="mean"; among equal values, the lower worker index).
    X: an (n, *shape) array or a list of n arrays of one shape (``commkernels.aggregate``).
    """
    if even not in _EVEN:
        raise ValueError(f"even: expected 'mean', 'lower' or 'upper', got {even!r}")
    u = updates(X)
    return _apply(u, _median_op, "median", even, 0)


def trimmed_mean(X, f=None, *, fraction=None):
    """Per coordinate, drop the f largest and the f smallest values and average the remaining n - 2f.

    Give f (an int, n > 2f) or ``fraction`` (Flower's trimmed mean: f = int(fraction * n), 0 <= fraction
    < 0.5), not both. Summed in float32 (float64 for float64 X) in ascending order, divided once.
    Differentiable for torch tensors: 1 / (n - 2f) of the gradient to each kept value.
    """
    u = updates(X)
    if fraction is not None:
        if f is not None:
            raise ValueError("f, fraction: give one of them, not both")
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 <= fraction < 0.5:
            raise ValueError(f"fraction: expected a number in [0, 0.5), got {fraction!r}")
        f = int(fraction * u.n)
    elif f is None:
        raise TypeError("trimmed_mean: missing f (or fraction=)")
    f = check_f("trimmed_mean", u.n, f)
    return _apply(u, _trimmed_mean_op, "trimmed_mean", "mean", f)


def meamed(X, f):
    """Mean around the median: per coordinate, the mean of the n - f values nearest the median (even n:
    the mean of the two middle values). Ties in distance keep the larger value. Needs n > 2f."""
    u = updates(X)
    f = check_f("meamed", u.n, f)
    return _apply(u, _meamed_op, "meamed", "mean", f)


def phocas(X, f):
    """Phocas: per coordinate, the mean of the n - f values nearest the f-trimmed mean (computed in the
    accumulation type). Ties in distance keep the larger value. Needs n > 2f."""
    u = updates(X)
    f = check_f("phocas", u.n, f)
    return _apply(u, _phocas_op, "phocas", "mean", f)


def _nearest_median_mean(u: Updates, beta: int):
    """Bulyan's second stage, for commkernels.aggregate.bulyan: per coordinate, the mean of the beta values
    of the workers in ``u`` (an Updates, e.g. ``updates(X).subset(selected)``) nearest their median.

    The same kernel as meamed(X, n - beta): needs n < 2 beta <= 2n (beta > n / 2 keeps the median inside
    the window; Bulyan's beta = theta - 2f with theta >= 4f + 3 satisfies it). Returns X's framework/shape;
    torch tensors go through commkernels::meamed (no autograd).
    """
    if isinstance(beta, bool) or not isinstance(beta, numbers.Integral) or not u.n < 2 * int(beta) <= 2 * u.n:
        raise ValueError(f"beta: nearest-median mean needs n/2 < beta <= n, got n={u.n}, beta={beta!r}")
    return _apply(u, _meamed_op, "meamed", "mean", u.n - int(beta))
