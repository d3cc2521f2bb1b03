"""Asynchronous and decentralized averaging: staleness weights, the FedBuff buffer, FedAsync mixing and the
variance-corrected mean of "Vanishing Variance" (Tian, Al-Ars, Kitsak, Hofstee 2024).

Sources: FedAsync (Xie, Koyejo, Gupta 2019) for the staleness functions and the mixing step, FedBuff
(Nguyen et al. 2022; the staleness-weighted buffer, as in arXiv 2206.10189) for ``buffer_add_``, and the
authors' DFL_torch code (``VarianceCorrector``) for the variance correction.
"""

from __future__ import annotations

import math
import numbers
import sys

import numpy as np

from .. import _backend, _checks, _eager, _torch_ops
from ._inputs import Updates, finish, from_parts, output, updates

_MAX_SIZE = (1 << 62)
STALENESS_KINDS = ("constant", "polynomial", "hinge")
_DEFAULT_A = {"polynomial": 0.5, "hinge": 10.0}  # FedBuff's 1/sqrt(1 + tau); FedAsync's hinge experiments
_DEFAULT_B = 4.0


def _real(value, name: str, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"{'' if low is None else f'{low} <= '}{name}{'' if high is None else f' <= {high}'}"
        raise ValueError(f"{name}: expected {bounds}, got {value}")
    return value


# ---- staleness --------------------------------------------------------------------------------------------

def _array_module(tau):
    fw = _backend.framework(tau, "tau")
    if fw == "numpy":
        return np
    if fw == "torch":
        return _torch_ops.torch
    if fw == "cupy":
        return sys.modules["cupy"]
    import jax.numpy as jnp

    return jnp


def staleness_weight(tau, kind: str = "constant", a: float | None = None, b: float | None = None):
    """The staleness weight s(tau) of an update computed tau steps ago (FedAsync, Xie et al. 2019):

    - ``"constant"``: s = 1.
    - ``"polynomial"``: s = (1 + tau)^(-a); a defaults to 0.5 (FedBuff's 1/sqrt(1 + tau)).
    - ``"hinge"``: s = 1 if tau <= b, else 1 / (a (tau - b) + 1); a defaults to 10, b to 4 (FedAsync).

    tau: a real number >= 0 (returns a Python float) or an array of them (NumPy, torch, CuPy, JAX; returns
    an array of the same framework, device and shape: tau's dtype for floating tau, float64 for integer
    tau). a, b: finite numbers >= 0. NaN or negative tau is refused (ValueError; for arrays, checked except
    while torch.compile traces). FedAsync then mixes with alpha_t = alpha * s(tau) (``fedasync_mix_``);
    FedBuff adds each update with weight s(tau) (``buffer_add_``).
    """
    if kind not in STALENESS_KINDS:
        raise ValueError(f"kind: expected one of {', '.join(map(repr, STALENESS_KINDS))}, got {kind!r}")
    a = _DEFAULT_A.get(kind, 0.0) if a is None else _real(a, "a", 0.0)
    b = _DEFAULT_B if b is None else _real(b, "b", 0.0)
    if isinstance(tau, numbers.Real) and not isinstance(tau, bool):
        t = float(tau)
        if not t >= 0:
            raise ValueError(f"tau: expected a staleness >= 0, got {tau}")
        if kind == "constant":
            return 1.0
        if kind == "polynomial":
            return (1.0 + t) ** (-a)
        return 1.0 if t <= b else 1.0 / (a * (t - b) + 1.0)
    if isinstance(tau, bool):
        raise TypeError("tau: expected a real number or an array, got bool")
    xp = _array_module(tau)
    dtype = _backend.dtype_name(tau)
    if dtype == "bool":
        raise TypeError("tau: expected a numeric array, got bool")
    if dtype not in _backend.FLOAT_DTYPES:
        if not (dtype.startswith("int") or dtype.startswith("uint")):
            raise TypeError(f"tau: expected a real-valued array, got dtype {dtype}")
        tau = tau.to(xp.float64) if xp is _torch_ops.torch else tau.astype(xp.float64)
    if not _backend.is_compiling() and bool((~(tau >= 0)).any()):
        raise ValueError("tau: expected staleness values >= 0 (no NaN)")
    if kind == "constant":
        return xp.ones_like(tau)
    if kind == "polynomial":
        return (1 + tau) ** (-a)
    return xp.where(tau <= b, xp.ones_like(tau), 1 / (a * (tau - b) + 1))


# ---- in-place axpy-like updates -----------------------------------------------------------------------------

def _inplace_pair(target, source, tname: str, sname: str) -> int:
    _checks.float_array(target, tname)
    _checks.float_array(source, sname)
    _checks.writable(target, tname)
    _checks.same_place(target, source, tname, sname)
    size = _checks.integer(_backend.numel(target), f"{tname}.size", 0, _MAX_SIZE)
    if _backend.numel(source) != size:
        raise ValueError(f"{sname}: expected {size} elements like {tname}, got {_backend.numel(source)}")
    tdt, sdt = _backend.dtype_name(target), _backend.dtype_name(source)
    if tdt != sdt and (tdt != "float32" or sdt == "float64"):
        raise TypeError(f"{tname}: expected float32 or {sname}'s dtype {sdt}, got {tdt}")
    if not _backend.is_compiling() and size and _overlap(target, source):
        raise ValueError(f"{sname}: must not overlap {tname}, unless it is the same array")
    return size


def _overlap(a, b) -> bool:
    """Partial overlap (the same memory exactly is allowed: the update is elementwise)."""
    if _backend.is_torch(a):
        sa, sb = a.data_ptr(), b.data_ptr()
        ea, eb = sa + a.numel() * a.element_size(), sb + b.numel() * b.element_size()
        return sa < eb and sb < ea and not (sa == sb and ea == eb and a.dtype == b.dtype)
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        same = (a.__array_interface__["data"][0] == b.__array_interface__["data"][0] and a.nbytes == b.nbytes
                and a.dtype == b.dtype)
        return bool(np.may_share_memory(a, b)) and not same
    return False


def _plain_pair(target, source) -> bool:
    """Whether (target, source) is the common call on plain CPU torch tensors (see _eager) that the full
    checks of _inplace_pair would accept: one float dtype (or a float32 target of a 16-bit source), both
    contiguous, as many elements, and the same memory or none in common. Anything else takes the full path."""
    torch = _torch_ops.torch
    if not _eager.plain_cpu(target, source, differentiable=(target, source)) or target.is_inference():
        return False
    tdt, sdt = target.dtype, source.dtype
    if tdt not in _eager.FLOATS or not (tdt == sdt or (tdt == torch.float32 and sdt != torch.float64)):
        return False
    n = target.numel()
    if source.numel() != n or not (target.is_contiguous() and source.is_contiguous()):
        return False
    ta, sa = target.data_ptr(), source.data_ptr()
    te, se = ta + n * target.element_size(), sa + n * source.element_size()
    return te <= sa or se <= ta or (ta == sa and tdt == sdt)


def _buffer_add_kernel(buffer, update, weight: float) -> None:
    _backend.module(buffer).buffer_add(buffer.reshape(-1), update.reshape(-1), weight, _backend.stream(buffer))


def _fedasync_mix_kernel(x, x_new, alpha: float) -> None:
    _backend.module(x).fedasync_mix(x.reshape(-1), x_new.reshape(-1), alpha, _backend.stream(x))


def _no_output_fake(*args) -> None:
    return None


_buffer_add_op = _torch_ops.define("buffer_add_", "(Tensor(a!) buffer, Tensor update, float weight) -> ()",
                                   _buffer_add_kernel, _no_output_fake, mutates_args=("buffer",))
_fedasync_mix_op = _torch_ops.define("fedasync_mix_", "(Tensor(a!) x, Tensor x_new, float alpha) -> ()",
                                     _fedasync_mix_kernel, _no_output_fake, mutates_args=("x",))


def buffer_add_(buffer, update, weight: float = 1.0):
    """FedBuff's server buffer step, in place: buffer <- buffer + weight * update; returns buffer.

    One fused pass (read both, write buffer), computed in float32 (float64 for a float64 buffer) and rounded
    once to the buffer's dtype. buffer: float32 or update's dtype (a float32 buffer may accumulate bfloat16
    or float16 updates), the same number of elements (shapes may differ), framework and device as update;
    contiguous and writable. weight: a finite real (e.g. ``staleness_weight(tau, ...)`` / K). Deterministic
    (elementwise). Not differentiable.
    """
    if _backend.is_torch(buffer) and _plain_pair(buffer, update):
        weight = _real(weight, "weight")
        _eager.mutated(buffer)
        _backend._cpu.buffer_add(_eager.dl(buffer), _eager.dl(update), weight, 0)
        return buffer
    _inplace_pair(buffer, update, "buffer", "update")
    weight = _real(weight, "weight")
    if _backend.is_torch(buffer):
        _buffer_add_op(buffer, update, weight)
    else:
        _buffer_add_kernel(buffer, update, weight)
    return buffer


def fedasync_mix_(x, x_new, alpha: float):
    """FedAsync's server step, in place: x <- (1 - alpha) x + alpha x_new; returns x.

    One fused pass, computed in float32 (float64 for float64 x) as (1 - alpha) * x + alpha * x_new and
    rounded once, so for finite x and x_new alpha = 0 leaves x unchanged and alpha = 1 gives x_new exactly
    (0 * inf is NaN: an inf in x_new gives NaN there even at alpha = 0, as one in x does at alpha = 1). x: float32 or
    x_new's dtype, the same number of elements, framework and device as x_new; contiguous and writable.
    alpha: a real in [0, 1] (FedAsync: alpha_t = alpha * staleness_weight(tau, ...)). Not differentiable.
    """
    if _backend.is_torch(x) and _plain_pair(x, x_new):
        alpha = _real(alpha, "alpha", 0.0, 1.0)
        _eager.mutated(x)
        _backend._cpu.fedasync_mix(_eager.dl(x), _eager.dl(x_new), alpha, 0)
        return x
    _inplace_pair(x, x_new, "x", "x_new")
    alpha = _real(alpha, "alpha", 0.0, 1.0)
    if _backend.is_torch(x):
        _fedasync_mix_op(x, x_new, alpha)
    else:
        _fedasync_mix_kernel(x, x_new, alpha)
    return x


# ---- variance-corrected mean ---------------------------------------------------------------------------------

def _vcm_run(u: Updates, lengths: list[int], weights: list[float], eps: float):
    out = output(u)
    u.module().variance_corrected_mean(u.parts, u.n, lengths, weights, eps, out, u.stream())
    return finish(u, out)


def _vcm_kernel(parts, stacked: bool, lengths, weights, eps: float):
    return _vcm_run(from_parts(parts, stacked), list(lengths), list(weights), eps)


def _vcm_fake(parts, stacked, lengths, weights, eps):
    first = parts[0]
    return first.new_empty(first.shape[1:] if stacked else first.shape)


def _vcm_torch(X, lengths, weights, eps: float):
    """The definition in eager torch ops on X (n, d), for the backward pass (autograd through it)."""
    torch = _torch_ops.torch
    w = torch.tensor(weights, dtype=X.dtype, device=X.device)
    m = (w[:, None] * X).sum(dim=0)
    pieces, start = [], 0
    for length in lengths:
        s = slice(start, start + length)
        start += length
        if length < 2:
            pieces.append(m[s])
            continue
        target = (w * X[:, s].var(dim=1)).sum()
        mu, var = m[s].mean(), m[s].var()
        pieces.append((m[s] - mu) * torch.sqrt((target + eps) / (var + eps)) + mu)
    return torch.cat(pieces) if pieces else m


def _vcm_setup(ctx, inputs, output):
    parts, stacked, lengths, weights, eps = inputs
    ctx.save_for_backward(*parts)
    ctx.stacked, ctx.lengths, ctx.weights, ctx.eps = stacked, list(lengths), list(weights), eps


def _vcm_backward(ctx, grad):
    # Recomputes the forward pass in eager torch (float32, float64 for float64) and differentiates it: the
    # scale of each segment depends on every input, so the gradient is not a simple weighting.
    torch = _torch_ops.torch
    parts = ctx.saved_tensors
    acc = torch.float64 if parts[0].dtype == torch.float64 else torch.float32
    with torch.enable_grad():
        leaves = [p.detach().requires_grad_(True) for p in parts]
        X = leaves[0] if ctx.stacked else torch.stack(leaves)
        X = X.reshape(len(ctx.weights), -1).to(acc)
        out = _vcm_torch(X, ctx.lengths, ctx.weights, ctx.eps)
        grads = torch.autograd.grad(out, leaves, grad.reshape(-1).to(acc), allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g.to(p.dtype) for p, g in zip(parts, grads)]
    return grads, None, None, None, None


_vcm_op = _torch_ops.define(
    "variance_corrected_mean", "(Tensor[] X, bool stacked, int[] lengths, float[] weights, float eps) -> Tensor",
    _vcm_kernel, _vcm_fake, backward=_vcm_backward, setup_context=_vcm_setup)


def _segment_lengths(segments, d: int) -> list[int]:
    if segments is None:
        return [d]
    if _backend.is_torch(segments):
        segments = segments.detach().cpu().numpy()
    if isinstance(segments, np.ndarray):
        if segments.ndim != 1 or not (np.issubdtype(segments.dtype, np.integer) or segments.size == 0):
            raise TypeError(f"segments: expected a 1-D sequence of ints, got an array of dtype {segments.dtype} "
                            f"and shape {segments.shape}")
        segments = segments.tolist()
    lengths = [_checks.integer(s, f"segments[{i}]", 0) for i, s in enumerate(segments)]
    if sum(lengths) != d:
        raise ValueError(f"segments: the lengths sum to {sum(lengths)}, expected the update size {d}")
    return lengths


def variance_corrected_mean(X, segments=None, mode: str = "follow", alpha: float | None = None,
                            eps: float = 1e-4):
    """Variance-corrected model averaging ("Vanishing Variance", Tian et al. 2024), per segment (layer).

    With w the row weights below and, for a segment s of the flattened update (ddof = 1 variances over
    the segment's elements, as ``torch.var``):

        m      = sum_i w_i x_i                                 (the weighted mean, per coordinate)
        target = sum_i w_i var(x_i[s])                         (the weighted mean of the inputs' variances)
        out[s] = (m[s] - mu) * sqrt((target + eps) / (var(m[s]) + eps)) + mu,   mu = mean(m[s])

    - mode ``"follow"`` (the authors' FollowOthers): w_i = 1/n; ``alpha`` must be None.
    - mode ``"conservative"`` (FollowConservative, as their decentralized averager uses it): row 0 is the
      node's own model, rows 1..n-1 the received ones; w_0 = alpha, w_i = (1 - alpha)/(n - 1), in both the
      mixture and the target: target = alpha var(x_0[s]) + (1 - alpha) mean_{i>=1} var(x_i[s]). Needs
      n >= 2 and alpha in [0, 1].

    Our reading of the paper and its code (the code is the anchor): the variance of a segment is taken over
    all of its elements (one scalar per layer), the target is that of the inputs, and a segment of one
    element is left as m (its variance is undefined), as DFL_torch leaves single-element tensors.

    X: an (n, *shape) array or a list of n arrays (``commkernels.aggregate``'s inputs; no stacking copy).
    segments: the lengths of consecutive segments of the flattened update, summing to d (a parameter
    list's numels), or None for one segment. eps: >= 0. One pass over X (per chunk of a segment: the rows'
    and the mixture's moments, merged per segment in chunk order: deterministic, Chan et al.) plus one pass
    over the d-element output; accumulated in float32 (float64 for float64 X). For 16-bit X the mixture is
    rounded to X's dtype before the rescaling (two roundings). Not robust: a non-finite value makes its
    whole segment non-finite. Differentiable for torch tensors (the backward pass recomputes the forward
    in eager torch and differentiates it).
    """
    u = updates(X)
    if mode not in ("follow", "conservative"):
        raise ValueError(f"mode: expected 'follow' or 'conservative', got {mode!r}")
    eps = _real(eps, "eps", 0.0)
    lengths = _segment_lengths(segments, u.d)
    if mode == "follow":
        if alpha is not None:
            raise ValueError("alpha: mode 'follow' weighs every update equally; alpha is for 'conservative'")
        weights = [1.0 / u.n] * u.n
    else:
        if alpha is None:
            raise ValueError("alpha: mode 'conservative' needs alpha, the weight of X[0] (the node's own model)")
        alpha = _real(alpha, "alpha", 0.0, 1.0)
        if u.n < 2:
            raise ValueError(f"X: mode 'conservative' needs n >= 2 (the own model and received ones), got n={u.n}")
        weights = [alpha] + [(1.0 - alpha) / (u.n - 1)] * (u.n - 1)
    if u.through_op():
        return _vcm_op(u.parts, u.stacked, lengths, weights, eps)
    return _vcm_run(u, lengths, weights, eps)
