"""Pre-aggregations on the Gram route (nnm, bucketing, clip, arc) and the `pre=` composition.

Each pre-aggregation is a linear map of the rows, Y = M X, whose matrix M (n' x n) comes from the Gram
matrix (nnm, clip, arc) or from the seed (bucketing). Returned alone it costs one gram pass and one
combine pass. Composed with a Gram rule (``krum(X, f, pre=("nnm", {"f": 2}))``) it costs nothing more:
the rule runs on G' = M G M^T and its final weights w become w M, still one combine pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _checks
from . import _gram_host as host
from ._gram import call, combine_pass, define_rule, gram_pass, real, shaped
from ._inputs import Updates, check_f, updates

PRE_KINDS = ("nnm", "bucketing", "clip", "arc")


@dataclass
class Prepared:
    G: np.ndarray  # n' x n' Gram matrix of the (pre-aggregated) rows about some center
    bad: np.ndarray  # n' mask of non-finite rows
    M: np.ndarray | None  # n' x n map from the workers (None: identity)

    @property
    def n(self) -> int:
        return self.G.shape[0]

    def weights(self, w) -> np.ndarray:
        """Weights over the pre-aggregated rows -> weights over the workers."""
        w = np.atleast_2d(np.asarray(w, np.float64))
        return w if self.M is None else w @ self.M


def parse_pre(pre, n: int):
    """(kind, params) or None; the params checked (ValueError naming pre)."""
    if pre is None:
        return None
    if isinstance(pre, str):
        kind, params = pre, {}
    elif isinstance(pre, tuple) and len(pre) == 2 and isinstance(pre[0], str) and isinstance(pre[1], dict):
        kind, params = pre
    else:
        raise TypeError("pre: expected None, a name or a (name, {params}) tuple, e.g. ('nnm', {'f': 2})")
    if kind not in PRE_KINDS:
        raise ValueError(f"pre: expected one of {', '.join(PRE_KINDS)}, got {kind!r}")
    required = {"nnm": {"f"}, "bucketing": {"s"}, "clip": {"c"}, "arc": {"f"}}[kind]
    allowed = required | ({"seed"} if kind == "bucketing" else set())
    missing, extra = required - set(params), set(params) - allowed
    if missing or extra:
        raise ValueError(f"pre: {kind} takes {sorted(allowed)}; missing {sorted(missing)}, unexpected {sorted(extra)}")
    p = dict(params)
    if kind in ("nnm", "arc"):
        p["f"] = check_f(kind, n, p["f"], "n > f")
    elif kind == "bucketing":
        p["s"] = _checks.integer(p["s"], "s", 1)
        p["seed"] = _checks.integer(p.get("seed", 0), "seed", 0, (1 << 64) - 1)
    else:
        p["c"] = real(p["c"], "c", 0.0)
    return kind, p


def pre_matrix(u: Updates, kind: str, p: dict, G=None):
    """M (n' x n) for a pre-aggregation. G: the gram pass to use (any center for nnm; about zero for clip
    and arc, which need norms); computed here when None."""
    if kind == "bucketing":
        return host.bucketing_matrix(u.n, p["s"], p["seed"])
    if kind == "nnm":
        G = gram_pass(u, "mean") if G is None else G
        return host.nnm_matrix(host.sqdist(G, host.bad_rows(G)), p["f"])
    G = gram_pass(u, "zero") if G is None else G
    bad = host.bad_rows(G)
    norms = np.sqrt(np.maximum(np.diag(host.clean(G, bad)), 0.0))
    return np.diag(host.clip_scales(norms, bad, p["c"]) if kind == "clip" else host.arc_scales(norms, bad, p["f"]))


def prepare(u: Updates, pre, mode: str = "mean") -> Prepared:
    """The Gram matrix of the rows a rule works on (the workers, or M X for a pre-aggregation), about the
    center of ``mode`` ("mean" or "zero"; clip and arc always use "zero": they need the norms)."""
    if pre is None:
        G = gram_pass(u, mode)
        return Prepared(G, host.bad_rows(G), None)
    kind, p = pre
    G = gram_pass(u, "zero" if kind in ("clip", "arc") else mode)
    M = pre_matrix(u, kind, p, G)
    bad = host.bad_rows(G)
    Gp = M @ host.clean(G, bad) @ M.T  # nnm and bucketing rows sum to 1: still about the same center
    bad_p = (M[:, bad] != 0).any(axis=1)
    Gp[bad_p, bad_p] = np.inf
    return Prepared(Gp, bad_p, M)


# ---- the pre-aggregations as functions (n' x d results) ---------------------------------------------------

def _pre_run(u: Updates, kind: str, p: dict):
    M = pre_matrix(u, kind, p)
    return shaped(u, combine_pass(u, M), M.shape[0])


def _nnm_run(u, f):
    return _pre_run(u, "nnm", {"f": f})


def _bucketing_run(u, s, seed):
    return _pre_run(u, "bucketing", {"s": s, "seed": seed % (1 << 64)})  # the op's int64 back to uint64


def _clip_run(u, c):
    return _pre_run(u, "clip", {"c": c})


def _arc_run(u, f):
    return _pre_run(u, "arc", {"f": f})


_nnm_op = define_rule("nnm", "int f", _nnm_run, lambda n, f: n)
_bucketing_op = define_rule("bucketing", "int s, int seed", _bucketing_run, lambda n, s, seed: -(-n // s))
_clip_op = define_rule("clip", "float c", _clip_run, lambda n, c: n)
_arc_op = define_rule("arc", "int f", _arc_run, lambda n, f: n)


def nnm(X, f: int):
    """Nearest-neighbour mixing (Allouah et al. 2023): row i of the (n, *shape) result is the mean of the
    n - f updates nearest x_i (itself included; ties to the lower index). A non-finite update's row is
    the mean of the n - f lowest-index finite updates, so up to f non-finite workers leave every row
    finite. One gram pass and one combine pass. Needs n > f."""
    u = updates(X)
    f = check_f("nnm", u.n, f, "n > f")
    return call(_nnm_op, _nnm_run, u, f)


def bucketing(X, s: int, seed: int = 0):
    """Bucketing (Karimireddy et al. 2022): the workers in a random order (numpy.random.Generator(PCG64(seed))
    .permutation(n)), cut into buckets of s consecutive ones (the last may hold fewer); returns the
    (ceil(n / s), *shape) bucket means. A bucket holding a non-finite worker is non-finite (at most f
    buckets for f such workers: the rule that follows copes with them). One combine pass."""
    u = updates(X)
    s = _checks.integer(s, "s", 1)
    seed = _checks.integer(seed, "seed", 0, (1 << 64) - 1)
    return call(_bucketing_op, _bucketing_run, u, s, _to_int64(seed))


def _to_int64(seed: int) -> int:
    return seed - (1 << 64) if seed >= (1 << 63) else seed


def clip(X, c: float):
    """Static clipping: row i of the (n, *shape) result is x_i min(1, c / ||x_i||); a non-finite update
    becomes a zero row. One gram pass (uncentered, for the norms) and one combine pass. c >= 0."""
    u = updates(X)
    c = real(c, "c", 0.0)
    return call(_clip_op, _clip_run, u, c)


def arc(X, f: int):
    """Adaptive robust clipping (Allouah et al. 2024; ByzFL's ARC): k = floor(2 (f / n) (n - f)); the k
    largest-norm updates are clipped to the (k+1)-th largest norm (non-finite updates count as the largest
    and become zero rows). Returns (n, *shape). Needs n > f."""
    u = updates(X)
    f = check_f("arc", u.n, f, "n > f")
    return call(_arc_op, _arc_run, u, f)


def materialize(u: Updates, pre) -> Updates:
    """The pre-aggregated rows as a new Updates (for rules that need the data itself, not just G)."""
    kind, p = pre
    Y = _pre_run(u, kind, p)
    return updates(Y)



def with_pre(rule, X, *args, pre, **kwargs):
    """``rule(pre_aggregation(X), *args, **kwargs)`` for any rule of commkernels.aggregate, e.g.
    ``with_pre(aggregate.trimmed_mean, X, 2, pre=("nnm", {"f": 2}))``.

    Gram-route rules that take ``pre=`` (krum, bulyan, mda, geometric_median) get it passed through: the
    pre-aggregation's matrix folds into their Gram matrix and final weights, no extra pass. Any other rule
    (the coordinate-wise ones read every value) gets the pre-aggregated rows, written once by a combine
    pass (after nnm/clip/arc's gram pass): there the composition costs those two passes plus the rule's.
    """
    u = updates(X)
    parsed = parse_pre(pre, u.n)
    name = getattr(rule, "__name__", "")
    if name in ("krum", "bulyan", "mda", "geometric_median") and getattr(rule, "__module__", "").startswith(
            "commkernels.aggregate"):
        return rule(X, *args, pre=pre, **kwargs)
    kind, p = parsed
    return rule(_pre_run(u, kind, p), *args, **kwargs)
