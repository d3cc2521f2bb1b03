"""commkernels.attacks: Byzantine attacks and a robustness score, to evaluate ``commkernels.aggregate``'s rules.

Every attack takes the honest updates ``H`` (an (h, *shape) array or a list of h arrays, as the aggregation
rules take X; read without stacking) and the number ``f`` of Byzantine workers, and returns their updates
as an (f, *shape) array of H's framework, device and dtype. The full input of a rule is then the honest
rows followed by the Byzantine ones, e.g. ``X = [*H, *B]`` (a list: no stacking copy).

mean_H and std_H are coordinate-wise over the honest set (std with ddof = 1), computed by one fused pass
over H (``honest_stats``): per column chunk, the h rows are summed, then their squared deviations from the
mean are summed while the chunk is still in cache; float32 accumulation (float64 for float64 H).

Attacks (sources): ``sign_flip`` (-mean_H), ``ipm`` (inner-product manipulation, Xie, Koyejo, Gupta 2020:
-tau mean_H), ``alie`` ("A little is enough", Baruch, Baruch, Goldberg 2019: mean_H + tau std_H, tau
defaulting to the paper's z from n and f), ``gaussian`` (independent N(mu, sigma^2) rows), ``mimic``
(Karimireddy, He, Jaggi 2022: copies of one honest worker), ``inf`` (every entry +inf), and
``optimal_alie`` / ``optimal_ipm``, which search tau to maximise ||rule(X) - mean_H||^2 for a given rule
(as ByzFL's optimal attacks do).

``robustness_score(F, X, honest)`` = ||F - mean_H||^2 / (sigma_H^2 / |H|), where sigma_H^2 = sum_j var_H(j)
(ddof = 1) = sum_{i in H} ||x_i - mean_H||^2 / (|H| - 1), the honest updates' total variance: the
expected squared error of the mean of |H| i.i.d. honest updates is sigma^2 / |H|, so a score near 1 is
what averaging the honest workers alone would achieve, and a score growing with the attack's magnitude
means the rule is broken.
"""

from __future__ import annotations

import math
import numbers
import sys
from statistics import NormalDist

import numpy as np

from . import _backend, _checks, _torch_ops
from .aggregate._inputs import Updates, from_parts, updates

__all__ = ["honest_stats", "alie_z", "sign_flip", "ipm", "alie", "gaussian", "mimic", "inf", "optimal_alie",
           "optimal_ipm", "robustness_score"]

_MAX_UINT64 = (1 << 64) - 1


# ---- the fused honest statistics -------------------------------------------------------------------------------

def _moments_run(u: Updates, center, want_mean: bool, want_std: bool):
    mod = u.module()
    mean = _backend.empty(u.like, u.d if want_mean else 0)
    std = _backend.empty(u.like, u.d if want_std else 0)
    totals = _backend.empty(u.like, 2, "float64")
    c = center.reshape(-1) if center is not None else _backend.empty(u.like, 0)
    mod.column_moments(u.parts, u.n, c, mean, std, totals, u.stream())
    return mean, std, totals


def _moments_kernel(parts, stacked: bool, center, want_mean: bool, want_std: bool):
    return _moments_run(from_parts(parts, stacked), center, want_mean, want_std)


def _moments_fake(parts, stacked, center, want_mean, want_std):
    first = parts[0]
    d = math.prod(first.shape[1:] if stacked else first.shape)
    torch = _torch_ops.torch
    return (first.new_empty(d if want_mean else 0), first.new_empty(d if want_std else 0),
            first.new_empty(2, dtype=torch.float64))


_moments_op = _torch_ops.define(
    "honest_moments",
    "(Tensor[] X, bool stacked, Tensor? F, bool want_mean, bool want_std) -> (Tensor, Tensor, Tensor)",
    _moments_kernel, _moments_fake)


def _moments(u: Updates, center=None, want_mean=True, want_std=True):
    if u.framework == "torch":
        return _moments_op(u.parts, u.stacked, center, want_mean, want_std)
    return _moments_run(u, center, want_mean, want_std)


def _shaped(u: Updates, flat):
    return _backend.finish(u.like, flat).reshape(u.shape)


def honest_stats(H):
    """(mean_H, std_H): the coordinate-wise mean and standard deviation (ddof = 1) of the honest updates, in
    one pass over H; arrays of the update's shape in H's framework, device and dtype. Needs h >= 2.
    Not differentiable (evaluation only)."""
    u = updates(H, "H")
    if u.n < 2:
        raise ValueError(f"H: the standard deviation (ddof=1) needs at least 2 honest updates, got {u.n}")
    mean, std, _ = _moments(u)
    return _shaped(u, mean), _shaped(u, std)


def _mean(u: Updates):
    mean, _, _ = _moments(u, want_std=False)
    return _shaped(u, mean)


# ---- helpers ------------------------------------------------------------------------------------------------------

def _xp(like):
    fw = _backend.framework(like, "H")
    if fw == "torch":
        return _torch_ops.torch
    if fw == "cupy":
        return sys.modules["cupy"]
    return np


def _repeat(u: Updates, v, f: int):
    """f copies of the update v as an (f, *shape) array (H's framework)."""
    if _backend.is_torch(v):
        return v.unsqueeze(0).expand((f,) + tuple(v.shape)).contiguous()
    xp = _xp(v) if not isinstance(v, np.ndarray) else np
    out = xp.broadcast_to(v, (f,) + tuple(v.shape)).copy()
    return _backend.finish(u.like, out) if u.framework == "jax" else out


def _f(f) -> int:
    return _checks.integer(f, "f", 0)


def _real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    return value


def _scaled(v, c: float):
    """c * v in v's dtype (the product rounded once)."""
    return v * c


# ---- attacks ---------------------------------------------------------------------------------------------------------

def alie_z(n: int, f: int) -> float:
    """The z of "A little is enough" (Baruch et al. 2019): with s = floor(n/2 + 1) - f, the number of honest
    workers the attackers need on their side, z = Phi^{-1}((n - s) / n). Needs 0 <= f and 0 < s < n."""
    n = _checks.integer(n, "n", 1)
    f = _checks.integer(f, "f", 0)
    s = math.floor(n / 2 + 1) - f
    if not 0 < s < n:
        raise ValueError(f"alie_z: needs 0 < s < n with s = floor(n/2 + 1) - f, got n={n}, f={f}, s={s}")
    return NormalDist().inv_cdf((n - s) / n)


def sign_flip(H, f: int = 1):
    """f copies of -mean_H."""
    u, f = updates(H, "H"), _f(f)
    return _repeat(u, _scaled(_mean(u), -1.0), f)


def ipm(H, tau: float = 0.1, f: int = 1):
    """Inner-product manipulation (Xie et al. 2020): f copies of -tau mean_H."""
    u, f, tau = updates(H, "H"), _f(f), _real(tau, "tau")
    return _repeat(u, _scaled(_mean(u), -tau), f)


def alie(H, tau: float | None = None, f: int = 1, n: int | None = None):
    """"A little is enough" (Baruch et al. 2019): f copies of mean_H + tau std_H (ddof = 1). tau defaults to
    ``alie_z(n, f)`` with n = h + f unless given. Needs h >= 2."""
    u, f = updates(H, "H"), _f(f)
    tau = alie_z(u.n + f if n is None else n, f) if tau is None else _real(tau, "tau")
    if u.n < 2:
        raise ValueError(f"H: ALIE's std_H (ddof=1) needs at least 2 honest updates, got {u.n}")
    mean, std, _ = _moments(u)
    return _repeat(u, _shaped(u, mean) + _shaped(u, std) * tau, f)


def gaussian(H, f: int = 1, sigma: float = 1.0, mu: float = 0.0, seed: int = 0):
    """f independent updates with i.i.d. N(mu, sigma^2) entries, drawn by NumPy's PCG64 seeded with ``seed``
    (the same on every framework and device), rounded to H's dtype."""
    u, f = updates(H, "H"), _f(f)
    sigma, mu = _real(sigma, "sigma"), _real(mu, "mu")
    if sigma < 0:
        raise ValueError(f"sigma: expected >= 0, got {sigma}")
    seed = _checks.integer(seed, "seed", 0, _MAX_UINT64)
    values = np.random.default_rng(seed).normal(mu, sigma, (f,) + tuple(u.shape))
    return _from_host(u, values)


def _from_host(u: Updates, values: np.ndarray):
    if u.framework == "torch":
        torch = _torch_ops.torch
        return torch.from_numpy(values).to(dtype=getattr(torch, u.dtype), device=u.like.device)
    if u.framework == "cupy":
        cupy = sys.modules["cupy"]
        with u.like.device:
            return cupy.asarray(values.astype(u.dtype))
    out = values.astype(u.dtype)
    return _backend.finish(u.like, out) if u.framework == "jax" else out


def mimic(H, f: int = 1, target: int = 0):
    """f copies of honest worker ``target``'s update (Karimireddy et al. 2022)."""
    u, f = updates(H, "H"), _f(f)
    target = _checks.integer(target, "target", 0, u.n - 1)
    return _repeat(u, u.rows()[target], f)


def inf(H, f: int = 1):
    """f updates whose every entry is +inf (a robust rule's output must stay finite)."""
    u, f = updates(H, "H"), _f(f)
    return _from_host(u, np.full((f,) + tuple(u.shape), np.inf))


# ---- the optimal attacks ---------------------------------------------------------------------------------------------

def _damage(rule, u: Updates, rows: list, b, f: int) -> float:
    """||rule(H + f copies of b) - mean_H||^2 (inf when the output is not finite)."""
    out = rule(rows + [b] * f)
    _, _, totals = _moments(u, center=out, want_mean=False, want_std=False)
    value = float(totals[1]) if not _backend.is_torch(totals) else float(totals[1].item())
    return value if math.isfinite(value) else math.inf


def _line_search(loss, grid, iters: int) -> tuple[float, float]:
    """The tau of largest loss on the grid, refined by golden-section search between its neighbours."""
    values = [loss(t) for t in grid]
    k = int(np.argmax(values))
    best_tau, best = grid[k], values[k]
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    la, lb = loss(a), loss(b)
    for _ in range(iters):
        if la >= lb:
            hi, b, lb = b, a, la
            a = hi - g * (hi - lo)
            la = loss(a)
        else:
            lo, a, la = a, b, lb
            b = lo + g * (hi - lo)
            lb = loss(b)
    for t, v in ((a, la), (b, lb)):
        if v > best:
            best_tau, best = t, v
    return best_tau, best


def _optimal(H, f: int, rule, taus, iters: int, direction):
    if not callable(rule):
        raise TypeError(f"rule: expected a callable X -> aggregate, got {type(rule).__name__}")
    u, f = updates(H, "H"), _f(f)
    iters = _checks.integer(iters, "iters", 0)
    grid = [float(t) for t in (np.geomspace(1e-2, 1e2, 17) if taus is None else taus)]
    if not grid or any(not math.isfinite(t) for t in grid):
        raise ValueError("taus: expected a non-empty sequence of finite numbers")
    grid = sorted(grid)
    rows = u.rows()
    base, step = direction(u)
    tau, _ = _line_search(lambda t: _damage(rule, u, rows, base + step * t, f), grid, iters)
    return _repeat(u, base + step * tau, f), tau


def optimal_alie(H, f: int, rule, taus=None, iters: int = 8):
    """ALIE with the tau that maximises ||rule([*H, *B]) - mean_H||^2 (rule: a callable taking a list of n
    updates, e.g. ``lambda X: trimmed_mean(X, f)``): evaluated on the grid ``taus`` (default 17 points
    geometrically spaced in [0.01, 100]), then refined by ``iters`` golden-section steps between the best
    grid point's neighbours. Returns (B, tau)."""
    def direction(u):
        if u.n < 2:
            raise ValueError(f"H: ALIE's std_H (ddof=1) needs at least 2 honest updates, got {u.n}")
        mean, std, _ = _moments(u)
        return _shaped(u, mean), _shaped(u, std)
    return _optimal(H, f, rule, taus, iters, direction)


def optimal_ipm(H, f: int, rule, taus=None, iters: int = 8):
    """IPM (-tau mean_H) with the tau that maximises ||rule([*H, *B]) - mean_H||^2, searched as in
    ``optimal_alie``. Returns (B, tau)."""
    def direction(u):
        mean = _mean(u)
        return mean * 0, -mean
    return _optimal(H, f, rule, taus, iters, direction)


# ---- robustness score ------------------------------------------------------------------------------------------

def _honest_index(honest, n: int) -> list[int]:
    if _backend.is_torch(honest):
        honest = honest.detach().cpu().numpy()
    a = np.asarray(honest)
    if a.dtype == bool:
        if a.shape != (n,):
            raise ValueError(f"honest: a boolean mask needs shape ({n},), got {a.shape}")
        idx = np.flatnonzero(a).tolist()
    else:
        if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
            raise TypeError("honest: expected a sequence of worker indices or a boolean mask")
        idx = [int(i) for i in a]
        if any(i < 0 or i >= n for i in idx):
            raise ValueError(f"honest: indices must be in [0, {n})")
        if len(set(idx)) != len(idx):
            raise ValueError("honest: repeated indices")
    if len(idx) < 2:
        raise ValueError(f"honest: the score's variance (ddof=1) needs at least 2 honest workers, got {len(idx)}")
    return idx


def robustness_score(F, X, honest) -> float:
    """||F - mean_H||^2 / (sigma_H^2 / |H|), as a Python float (see the module docstring for sigma_H^2).

    F: the rule's output (the update's shape, X's framework and device, any float dtype). X: all n inputs
    (an (n, *shape) array or a list). honest: the honest workers' indices (or a boolean mask of n), at
    least 2. One fused pass over the honest rows and F (float64 totals over fixed column chunks:
    deterministic). A non-finite F gives inf (or NaN); honest updates that are all equal give 0 when F
    equals them, else inf.
    """
    u = updates(X)
    _checks.float_array(F, "F")
    _checks.same_place(u.like, F, "X", "F")
    if tuple(F.shape) != tuple(u.shape):
        raise ValueError(f"F: expected the update's shape {u.shape}, got {tuple(F.shape)}")
    h = u.subset(_honest_index(honest, u.n))
    _, _, totals = _moments(h, center=F, want_mean=False, want_std=False)
    t = totals.detach().cpu().numpy() if _backend.is_torch(totals) else np.asarray(
        totals.get() if hasattr(totals, "get") and not isinstance(totals, np.ndarray) else totals)
    sigma2, dev = float(t[0]), float(t[1])
    if sigma2 == 0:
        return 0.0 if dev == 0 else math.inf
    return dev / (sigma2 / h.n)
