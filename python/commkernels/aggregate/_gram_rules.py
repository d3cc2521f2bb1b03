"""The distance-based rules on the Gram route: krum (multi-krum), geometric_median, centered_clipping,
mda and flag; each is one gram pass, float64 host work on the n x n matrix, and one combine pass
(geometric_median's default median start adds the coordinate-wise median pass).

Non-finite updates (NaN/Inf, or a centered squared norm past float32): infinitely far from everything,
never selected, weight zero; with at most f of them every result stays finite.
"""

from __future__ import annotations

import numpy as np

from .. import _backend, _checks
from . import _gram_host as host
from ._gram import call, center_vector, choice, combine_pass, define_rule, gram_pass, real, shaped
from ._gram_pre import Prepared, materialize, parse_pre, prepare
from ._inputs import Updates, check_f, updates

MDA_MAX_NODES = 200_000


def _pre_arg(pre):
    """pre as the torch-op string argument ("" for none) and back."""
    if pre is None:
        return ""
    kind, p = pre
    return kind + ";" + ";".join(f"{k}={v}" for k, v in sorted(p.items()))


def _pre_from(arg: str):
    if not arg:
        return None
    kind, *items = arg.split(";")
    p = {}
    for item in items:
        k, v = item.split("=")
        p[k] = float(v) if k == "c" else int(v)
    return kind, p


# ---- krum ------------------------------------------------------------------------------------------------

def _krum_run(u: Updates, f: int, m: int, neighbors: str, reduce: str, pre: str):
    P = prepare(u, _pre_from(pre))
    D = host.sqdist(P.G, P.bad)
    sel = host.lowest(host.krum_scores(D, f, neighbors), m)
    if reduce == "none":
        W = np.zeros((m, P.n))
        W[np.arange(m), sel] = 1.0
        return shaped(u, combine_pass(u, P.weights(W)), m)
    w = np.zeros(P.n)
    w[sel] = 1.0 / m
    return shaped(u, combine_pass(u, P.weights(w)))


_krum_op = define_rule("krum", "int f, int m, str neighbors, str reduce, str pre", _krum_run,
                       lambda n, f, m, nb, reduce, pre: m if reduce == "none" else None)


def krum(X, f: int, m: int = 1, neighbors: str = "n-f-2", reduce: str = "mean", pre=None):
    """Krum / Multi-Krum (Blanchard et al. 2017; El Mhamdi et al. 2018).

    score_i = the sum of the squared distances from x_i to its k nearest other updates, k = n - f - 2
    (``neighbors="n-f-2"``, the paper) or n - f - 1 (``"n-f-1"``, ByzFL); the m lowest scores are selected
    (ties to the lower index). ``reduce="mean"`` returns their mean (one update); ``"none"`` returns the m
    selected updates, (m, *shape), in score order. Needs n >= 2f + 3 and 1 <= m <= n - f.
    ``pre``: a pre-aggregation applied first without another pass, e.g. ``("nnm", {"f": f})``,
    ``("bucketing", {"s": 2, "seed": 0})``, ``("clip", {"c": 1.0})``, ``("arc", {"f": f})`` (the bound is
    then checked on the pre-aggregated count). One gram pass, one combine pass.
    """
    u = updates(X)
    pre = parse_pre(pre, u.n)
    n_rows = _rows_after(u.n, pre)
    f = check_f("krum", n_rows, f, "n >= 2f+3")
    m = _checks.integer(m, "m", 1, n_rows - f)
    neighbors = choice(neighbors, "neighbors", ("n-f-2", "n-f-1"))
    reduce = choice(reduce, "reduce", ("mean", "none"))
    return call(_krum_op, _krum_run, u, f, m, neighbors, reduce, _pre_arg(pre))


def _rows_after(n: int, pre) -> int:
    if pre is not None and pre[0] == "bucketing":
        return -(-n // pre[1]["s"])
    return n


# ---- geometric median (smoothed Weiszfeld) ----------------------------------------------------------------

def _coordinate_median(u: Updates, good):
    from . import median  # the coordinate-wise kernel of commkernels.aggregate

    sub = u if good.all() else u.subset(np.flatnonzero(good))
    X = sub.parts[0] if sub.stacked else list(sub.parts)
    return median(X)


def _gm_run(u: Updates, nu, max_iter, tol, weights, start_kind, start, pre):
    pre = _pre_from(pre)
    if pre is not None and pre[0] in ("clip", "arc"):
        return _gm_run(materialize(u, pre), nu, max_iter, tol, weights, start_kind, start, "")
    w = np.ones(u.n if pre is None else _rows_after(u.n, pre)) if not weights else np.asarray(weights, np.float64)
    if start_kind == "zero":
        P = prepare(u, pre, "zero")
        s_flat = None
    elif start_kind == "median":
        base = u if pre is None else materialize(u, pre)
        s_flat = center_vector(u, _coordinate_median(base, np.ones(base.n, bool)), "start")
        P = _prepare_about(u, pre, s_flat)
        if P.bad.all():
            # a non-finite median (non-finite workers in some coordinate's middle): the median of the
            # finite workers instead, found by one more look at the rows
            good = ~host.bad_rows(gram_pass(base, "mean"))
            s_flat = center_vector(u, _coordinate_median(base, good), "start")
            P = _prepare_about(u, pre, s_flat)
    else:
        s_flat = center_vector(u, start, "start")
        P = _prepare_about(u, pre, s_flat)
    a, _ = host.weiszfeld(P.G, P.bad, w, nu, max_iter, tol)
    coef = P.weights(a)[0]
    if s_flat is None:
        return shaped(u, combine_pass(u, coef[None, :]))
    rest = 0.0 if max_iter > 0 else 1.0 - float(a.sum())
    return shaped(u, combine_pass(u, np.concatenate([coef, [rest]])[None, :], (s_flat,)))


def _prepare_about(u: Updates, pre, center_flat) -> Prepared:
    G = gram_pass(u, "vector", center_flat)
    bad = host.bad_rows(G)
    if pre is None:
        return Prepared(G, bad, None)
    kind, p = pre
    if kind == "nnm":
        M = host.nnm_matrix(host.sqdist(G, bad), p["f"])
    else:
        M = host.bucketing_matrix(u.n, p["s"], p["seed"])
    Gp = M @ host.clean(G, bad) @ M.T  # rows of M sum to 1: still about the same center
    bad_p = (M[:, bad] != 0).any(axis=1)
    Gp[bad_p, bad_p] = np.inf
    return Prepared(Gp, bad_p, M)


_gm_op = define_rule("geometric_median",
                     "float nu, int max_iter, float tol, float[]? weights, str start_kind, Tensor? start, str pre",
                     _gm_run)


def geometric_median(X, nu: float = 1e-6, max_iter: int = 100, tol: float = 1e-6, weights=None,
                     start="median", pre=None):
    """Smoothed Weiszfeld (RFA, Pillutla et al. 2022): beta_i = w_i / max(nu, ||x_i - z||),
    z <- sum_i beta_i x_i / sum_i beta_i, for at most max_iter steps, stopping once
    ||z_new - z|| <= tol * (sum_i w_i ||x_i - z_new||) / sum_i w_i (translation and scale invariant).

    start: "median" (the coordinate-wise median of the finite updates; an extra pass), "zero" (ByzFL's
    start) or an array of the update's shape. The iterations run on the Gram matrix about the start (z stays
    in the affine span of the start and the updates): one gram pass, one combine pass, whatever max_iter.
    weights: n finite numbers >= 0 with a positive sum (default all 1). Non-finite updates get weight 0.
    nu > 0, tol >= 0, max_iter >= 0. ``pre``: as in krum (clip/arc are applied as a separate pass here).
    """
    u = updates(X)
    pre = parse_pre(pre, u.n)
    n_rows = _rows_after(u.n, pre)
    nu = real(nu, "nu", 0.0, low_open=True)
    tol = real(tol, "tol", 0.0)
    max_iter = _checks.integer(max_iter, "max_iter", 0)
    w = None
    if weights is not None:
        from ._mean import _weights

        w = _weights(weights, n_rows)
    start_tensor = None
    if isinstance(start, str):
        start_kind = choice(start, "start", ("median", "zero"))
    else:
        start_kind = "array"
        center_vector(u, start, "start")  # checked here, with the user's argument name
        start_tensor = start
    return call(_gm_op, _gm_run, u, nu, max_iter, tol, w, start_kind, start_tensor, _pre_arg(pre))


# ---- centered clipping ------------------------------------------------------------------------------------

def _cc_run(u: Updates, center, tau, iters):
    c = center_vector(u, center)
    G = gram_pass(u, "vector", c)
    bad = host.bad_rows(G)
    a = host.centered_clipping(G, bad, tau, iters)
    rest = 1.0 - float(a.sum())
    return shaped(u, combine_pass(u, np.concatenate([a, [rest]])[None, :], (c,)))


_cc_op = define_rule("centered_clipping", "Tensor center, float tau, int iters", _cc_run)


def centered_clipping(X, center, tau: float, iters: int = 1):
    """Centered clipping (Karimireddy et al. 2021), stateless: v <- v + (1/n) sum_i (x_i - v) min(1, tau /
    ||x_i - v||), from v = center, iters times; a non-finite update adds nothing. center: an array of the
    update's shape (X's framework, dtype, device), e.g. the previous aggregate. tau > 0, iters >= 0. One
    gram pass about the center, one combine pass."""
    u = updates(X)
    center_vector(u, center)
    tau = real(tau, "tau", 0.0, low_open=True)
    iters = _checks.integer(iters, "iters", 0)
    return call(_cc_op, _cc_run, u, center, tau, iters)


# ---- MDA -------------------------------------------------------------------------------------------------

def _mda_run(u: Updates, f: int, pre: str):
    P = prepare(u, _pre_from(pre))
    D = host.sqdist(P.G, P.bad)
    try:
        S = host.mda_subset(D, f, MDA_MAX_NODES)
    except host.SearchLimit:
        raise ValueError(f"mda: the exact search exceeded {MDA_MAX_NODES} nodes (n={P.n}, f={f}); MDA is exact "
                         "and meant for small n or f") from None
    w = np.zeros(P.n)
    w[S] = 1.0 / len(S)
    return shaped(u, combine_pass(u, P.weights(w)))


_mda_op = define_rule("mda", "int f, str pre", _mda_run)


def mda(X, f: int, pre=None):
    """Minimum-diameter averaging (El Mhamdi et al. 2018): the mean of the (n - f)-subset of smallest
    diameter (largest pairwise distance); ties to the smallest sum of pairwise squared
    distances, then to the lexicographically first subset. Exact
    branch-and-bound on the distance matrix (one gram pass, one combine pass); ValueError when the search
    passes MDA_MAX_NODES nodes (large n with large f). Needs n > 2f."""
    u = updates(X)
    pre = parse_pre(pre, u.n)
    f = check_f("mda", _rows_after(u.n, pre), f, "n > 2f")
    return call(_mda_op, _mda_run, u, f, _pre_arg(pre))


# ---- Flag Aggregator ----------------------------------------------------------------------------------------

def _flag_run(u: Updates, r: int, lam: float, iters: int, eps: float):
    G = gram_pass(u, "zero")
    bad = host.bad_rows(G)
    tol = 64 * u.n * (2.2e-16 if u.dtype == "float64" else 1.2e-7)
    coef = host.flag(G, bad, r, lam, iters, eps, tol)
    return shaped(u, combine_pass(u, coef[None, :]))


_flag_op = define_rule("flag", "int r, float lam, int iters, float eps", _flag_run)


def flag(X, r: int = 1, lam: float = 0.0, iters: int = 1, eps: float = 1e-7):
    """Flag Aggregator (Almasi et al. 2023; hamidralmasi/FlagAggregator), on the Gram matrix of the
    column-normalised updates g_i = x_i / ||x_i|| (0 for a zero or non-finite update).

    Y0: the flag mean (top-r left singular vectors of [g_i]; the repository starts from a random subspace,
    we start here so the result is deterministic). Each of ``iters`` IRLS steps (the repository hard-codes
    one) reweighs w_i = (|1 - ||Y^T g_i||^2| + eps)^(-1/4) and, for lam > 0, every ordered pair i != j with
    w_ij = (|1 - ||Y^T (g_i - g_j)||^2| + eps)^(-1/4) lam / (n (n - 1)), and takes Y = the top-r left
    singular vectors of [w_i g_i, w_ij (g_i - g_j)]. Returns (1/r) sum_i Y Y^T g_i (as the repository: the
    normalised updates, so the result's scale is that of unit vectors). Y lives in the span of the g_i: the
    IRLS runs exactly in k <= n coordinates of that span (directions below 64 n eps of the largest
    eigenvalue of the normalised Gram matrix count as rounding). 1 <= r <= n; lam >= 0; eps > 0.
    """
    u = updates(X)
    r = _checks.integer(r, "r", 1, u.n)
    lam = real(lam, "lam", 0.0)
    iters = _checks.integer(iters, "iters", 0)
    eps = real(eps, "eps", 0.0, low_open=True)
    return call(_flag_op, _flag_run, u, r, lam, iters, eps)



# ---- Bulyan ----------------------------------------------------------------------------------------------

def _theta(n: int, f: int, theta: str) -> int:
    return n - 2 * f if theta == "n-2f" else n - 2 * f - 2


def _bulyan_run(u: Updates, f: int, theta: str, pre: str):
    from ._coord import _nearest_median_mean

    pre = _pre_from(pre)
    P = prepare(u, pre)
    t = _theta(P.n, f, theta)
    chosen = sorted(host.bulyan_select(host.sqdist(P.G, P.bad), f, t))
    if P.M is None:
        sub = u.subset(chosen)  # the selected workers' memory, no copy
    else:
        sub = updates(shaped(u, combine_pass(u, P.M[chosen]), len(chosen)))
    beta = t - 2 * f
    if t < 2 * beta:  # the coordinate-wise kernel's window applies
        return _nearest_median_mean(sub, beta)
    out = _backend.empty(sub.like, sub.d)
    sub.module().aggregate_nearest_median_mean(sub.parts, sub.n, beta, out, sub.stream())
    return shaped(sub, out)


_bulyan_op = define_rule("bulyan", "int f, str theta, str pre", _bulyan_run)


def bulyan(X, f: int, theta: str = "n-2f", pre=None):
    """Bulyan (El Mhamdi et al. 2018): theta rounds of Krum, each among the updates not selected yet (with
    n_r - f - 2 neighbours, at least 0; ties to the lower index), theta = n - 2f (``theta="n-2f-2"``:
    Garfield's count); then per coordinate the mean of the beta = theta - 2f selected values nearest their
    median (even count: the mean of the two middle values; NaN the farthest; a tie in distance keeps the
    larger value). The selection is one gram pass and host work; the second stage reads the selected
    updates in place (commkernels.aggregate's coordinate-wise kernel where theta < 2 beta, else a per-column
    sort: csrc/aggregate/nearest.h). Needs n >= 4f + 3. ``pre``: as in krum (the selected pre-aggregated
    rows are then written once by a combine pass)."""
    u = updates(X)
    pre = parse_pre(pre, u.n)
    f = check_f("bulyan", _rows_after(u.n, pre), f, "n >= 4f+3")
    theta = choice(theta, "theta", ("n-2f", "n-2f-2"))
    return call(_bulyan_op, _bulyan_run, u, f, theta, _pre_arg(pre))
