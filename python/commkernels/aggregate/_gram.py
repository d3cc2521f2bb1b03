"""The Gram route (shared/specs/aggregate.md, "Design point"): gram(X, center) and combine(X, W), the two
passes over the data that every distance-based rule is built from, and the plumbing the rules share.

A rule runs: one gram pass (the m x m float64 matrix G of the updates about a center c, computed in
float32 blocks, float64 for float64 X; csrc/aggregate/gram.h), float64 host work on G whatever the
iteration count (_gram_host.py), and one combine pass (a weight matrix applied to the rows). Iterates stay
in the affine span of the rows and of c, so G holds every distance the iterations need.

The center: "mean" (the per-coordinate mean of the finite entries, fused into the pass) for the
selection rules; the start point (Weiszfeld) or the given center (centered clipping), which is then the
origin of the coordinates; zero where norms are needed (clip, arc, flag). Precision of an entry:
~eps32 |x_i - c| |x_k - c|, so distances between close rows stay accurate when c is near them. With the
"mean" center a far (finite) outlier moves c by its distance / n: the honest rows' distances then carry
an absolute error ~eps32 (|outlier| / n)^2 — harmless unless an outlier is ~10^3 n times farther than the
honest spread; a row whose centered squared norm overflows float32 counts as non-finite.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import _backend, _torch_ops
from ._inputs import Updates, from_parts, updates

_CENTER_MODES = {"zero": 0, "mean": 1, "vector": 2}


# ---- the two passes ---------------------------------------------------------------------------------------

def _flat(a):
    return a.reshape(-1)


def center_vector(u: Updates, center, name: str = "center"):
    """An array of the update's shape in X's framework, device and dtype, as a flat contiguous view."""
    fw = _backend.framework(center, name)
    if fw != u.framework:
        raise TypeError(f"{name}: expected a {u.framework} array like X, got {fw}")
    if _backend.device(center) != u.device:
        raise TypeError(f"{name}: expected an array on X's device {u.device}, got {_backend.device(center)}")
    if _backend.dtype_name(center) != u.dtype:
        raise TypeError(f"{name}: expected dtype {u.dtype} like X, got {_backend.dtype_name(center)}")
    if tuple(int(s) for s in center.shape) != tuple(u.shape):
        raise ValueError(f"{name}: expected shape {tuple(u.shape)} (one update), got {tuple(center.shape)}")
    if not _backend.is_contiguous(center):
        raise ValueError(f"{name}: expected a C-contiguous array (make it contiguous first)")
    if fw == "jax":
        center = np.asarray(center)
    return _flat(center)


def gram_pass(u: Updates, mode: str = "mean", center=None) -> np.ndarray:
    """G (n x n float64, host) of the rows about the center (mode "zero", "mean" or "vector" + center)."""
    G = np.empty((u.n, u.n), dtype=np.float64)
    dummy = center if center is not None else u.parts[0]
    u.module().aggregate_gram(u.parts, u.n, _CENTER_MODES[mode], dummy, G, u.stream())
    return G


def combine_pass(u: Updates, W, extra=()):
    """W (r x (n + len(extra))) applied to the rows and then the extra flat vectors: an (r * d) flat array
    of X's framework, device and dtype. Zero weights skip their row (a non-finite row never leaks in)."""
    W = np.ascontiguousarray(W, dtype=np.float64)
    r = W.shape[0]
    parts, count = u.parts, u.n
    if extra:
        parts = [_flat(x) for x in u.rows()] + list(extra)
        count = u.n + len(extra)
    out = _backend.output_buffer(u.like, r * u.d)
    u.module().aggregate_combine(parts, count, W.reshape(-1), r, out, u.stream())
    return out


def shaped(u: Updates, flat, rows: int | None = None):
    """The flat result as one update (rows None) or as (rows, *shape), in the caller's framework."""
    out = _backend.finish(u.like, flat)
    return out.reshape(tuple(u.shape) if rows is None else (rows,) + tuple(u.shape))


def host_array(u: Updates, a):
    """A small float64 host result in the caller's framework (torch/CuPy on X's device)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    if u.framework == "torch":
        torch = _torch_ops.torch
        return torch.from_numpy(a).to(u.like.device)
    if u.framework == "cupy":
        import cupy

        with cupy.cuda.Device(u.device[1]):
            return cupy.asarray(a)
    if u.framework == "jax":
        import jax.numpy as jnp

        return jnp.asarray(a)
    return a


# ---- argument checks ----------------------------------------------------------------------------------------

def real(value, name: str, low: float | None = None, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name}: expected {name} {'>' if low_open else '>='} {low}, got {value}")
    return value


def choice(value, name: str, options) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name}: expected one of {', '.join(repr(o) for o in options)}, got {value!r}")
    return value


# ---- torch custom ops ---------------------------------------------------------------------------------------

def define_rule(name: str, params: str, run, fake_rows=None):
    """commkernels::<name>(Tensor[] X, bool stacked, <params>) -> Tensor, whose kernel calls
    run(Updates, *params). fake_rows(n, *params) gives the number of output rows (None: one update)."""

    def kernel(parts, stacked, *args):
        return run(from_parts(parts, stacked), *args)

    def fake(parts, stacked, *args):
        first = parts[0]
        shape = tuple(first.shape[1:]) if stacked else tuple(first.shape)
        n = first.shape[0] if stacked else len(parts)
        rows = None if fake_rows is None else fake_rows(n, *args)
        return first.new_empty(shape if rows is None else (rows,) + shape)

    schema = f"(Tensor[] X, bool stacked{', ' + params if params else ''}) -> Tensor"
    return _torch_ops.define(name, schema, kernel, fake)


def call(op, run, u: Updates, *args):
    """The rule through its torch op where u.through_op(), directly otherwise."""
    if u.through_op():
        return op(u.parts, u.stacked, *args)
    return run(u, *args)


# ---- public: gram and combine ------------------------------------------------------------------------------

def gram(X, center=True):
    """The Gram matrix of the (centered) updates and their norms: (G, norms) with
    G[i][k] = <x_i - c, x_k - c> and norms[i] = sqrt(G[i][i]), as float64 arrays in X's framework (on X's
    device), from one pass over X.

    center: True (default) — c is the per-coordinate mean of the finite entries (fused into the pass);
    False — c = 0 (the plain Gram matrix: beware cancellation in float32 on updates with a large common
    component); or an array of the update's shape (X's framework, dtype, device). Accumulation: float32 in
    blocks of at most 4096 coordinates, float64 across blocks (float64 throughout for float64 X);
    deterministic whatever the thread count. A row with a NaN/Inf entry has a non-finite G[i][i] (and
    non-finite entries in its row and column); the other entries never see it.
    """
    u = updates(X)
    if center is True:
        G = gram_pass(u, "mean")
    elif center is False:
        G = gram_pass(u, "zero")
    else:
        G = gram_pass(u, "vector", center_vector(u, center))
    with np.errstate(invalid="ignore"):
        norms = np.sqrt(np.abs(np.diag(G)))
    return host_array(u, G), host_array(u, norms)


def _weight_matrix(W, n: int) -> np.ndarray:
    if _backend.is_torch(W):
        W = W.detach().cpu().to(dtype=_torch_ops.torch.float64).numpy()
    elif hasattr(W, "get") and not isinstance(W, np.ndarray):
        W = W.get()
    try:
        W = np.array(W, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"W: expected an (m, {n}) array of real numbers ({e})") from None
    if W.ndim == 1:
        W = W[None, :]
    if W.ndim != 2 or W.shape[1] != n:
        raise ValueError(f"W: expected an (m, {n}) weight matrix (one column per update), got shape {W.shape}")
    if not np.all(np.isfinite(W)):
        raise ValueError("W: expected finite weights")
    return W


def _combine_run(u: Updates, W: list, r: int):
    Wm = np.asarray(W, np.float64).reshape(r, u.n)
    return shaped(u, combine_pass(u, Wm), r)


_combine_op = define_rule("combine", "float[] W, int r", _combine_run, lambda n, W, r: r)


def _combine_setup(ctx, inputs, output):
    parts, stacked, W, r = inputs
    ctx.stacked, ctx.r = stacked, r
    ctx.n = parts[0].shape[0] if stacked else len(parts)
    ctx.W = list(W)


def _combine_backward(ctx, grad):
    """d(W X)/dX: the gradient of row i is sum_r W[r][i] grad[r] (linear, so no data is saved)."""
    torch = _torch_ops.torch
    acc = torch.float64 if grad.dtype == torch.float64 else torch.float32
    Wt = torch.tensor(ctx.W, dtype=torch.float64).reshape(ctx.r, ctx.n).T.to(device=grad.device, dtype=acc)
    g = (Wt @ grad.reshape(ctx.r, -1).to(acc)).to(grad.dtype)
    shape = tuple(grad.shape[1:])
    if ctx.stacked:
        return [g.reshape((ctx.n,) + shape)], None, None, None
    return [g[i].reshape(shape) for i in range(ctx.n)], None, None, None


if _combine_op is not None:
    _combine_op.register_autograd(_combine_backward, setup_context=_combine_setup)


def combine(X, W):
    """W X: the (m, *shape) array whose row r is sum_i W[r][i] x_i, from one pass over X.

    W: an (m, n) (or (n,) for m = 1, still returning (1, *shape)) matrix of finite real numbers, any
    framework (read back to the host). Accumulation in float32 (float64 for float64 X), worker by worker in
    index order; a weight of exactly 0 skips its worker, so a non-finite update with zero weight never
    reaches the result. Returns X's framework, dtype and device. Differentiable for torch tensors.
    """
    u = updates(X)
    Wm = _weight_matrix(W, u.n)
    return call(_combine_op, _combine_run, u, [float(v) for v in Wm.reshape(-1)], int(Wm.shape[0]))
