"""commkernels.attacks against the NumPy float64 references (reference/attacks.py), with error bounds derived
from the kernel's arithmetic, invariants of the score, the optimal attacks' search, and bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import commkernels
from commkernels import attacks
from commkernels.attacks import _moments_op
from commkernels.reference import attacks as ref

DTYPES = ("float32", "float64", "float16", "bfloat16")
UNIT = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}
ACC = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-24, "bfloat16": 2.0**-24}
TINY = {"float64": 5e-324, "float32": 1.5e-45, "float16": 6e-8, "bfloat16": 1e-40}


def to64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().to(torch.float64).numpy().copy()
    return np.array(a, dtype=np.float64)


def make(values, dtype: str, framework: str):
    t = torch.from_numpy(np.ascontiguousarray(values)).to(getattr(torch, dtype))
    return t.numpy() if framework == "numpy" else t


@st.composite
def honest_sets(draw, min_h=2):
    dtype = draw(st.sampled_from(DTYPES))
    framework = "torch" if dtype == "bfloat16" else draw(st.sampled_from(["numpy", "torch"]))
    h = draw(st.integers(min_h, 12))
    d = draw(st.one_of(st.integers(0, 40), st.integers(1, 5000)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "offset", "ties"]))
    if kind == "ties":
        H = rng.integers(-2, 3, (h, d)) * 0.5
    else:
        H = rng.standard_normal((h, d)) * rng.uniform(0.1, 3)
        if kind == "offset":
            H += rng.uniform(-50, 50, d)
    Hx = make(H, dtype, framework)
    as_list = draw(st.booleans())
    if as_list:
        Hx = [Hx[i].copy() if framework == "numpy" else Hx[i].clone() for i in range(h)]
    return Hx, to64(make(H, dtype, framework)), dtype


def mean_error(H64, dtype):
    """The mean: h roundings in the accumulation type of sum |x| / h, and one multiplication by 1/h."""
    h = H64.shape[0]
    return (h + 2) * ACC[dtype] * np.abs(H64).mean(axis=0)


def std_error(H64, dtype):
    """Two-pass variance with an inexact mean (error delta): the rounded deviations, squares and h-term sum
    give (h + 4) u relative error in M2, the mean's error adds h delta^2 (first order cancels since the
    deviations sum to zero), the factor 1/(h-1) and the sqrt one rounding each."""
    h = H64.shape[0]
    std = H64.std(axis=0, ddof=1)
    delta = mean_error(H64, dtype)
    return ((h + 7) * ACC[dtype] / 2) * std + 1.5 * delta


@given(honest_sets())
def test_honest_stats_match_reference(case):
    H, H64, dtype = case
    mean, std = attacks.honest_stats(H)
    first = H[0] if isinstance(H, list) else H
    assert type(mean) is type(first) and str(mean.dtype) == str(first.dtype)
    want_mean, want_std = ref.honest_mean_std(H64)
    assert mean.shape == want_mean.shape
    em = mean_error(H64, dtype) + UNIT[dtype] * np.abs(want_mean) + TINY[dtype]
    assert np.all(np.abs(to64(mean) - want_mean) <= em)
    assert np.all(np.abs(to64(std) - want_std) <= std_error(H64, dtype) + UNIT[dtype] * want_std + TINY[dtype])


@given(honest_sets(), st.integers(0, 5), st.floats(-5, 5))
def test_attacks_match_reference(case, f, tau):
    H, H64, dtype = case
    h, d = H64.shape
    want_mean, want_std = ref.honest_mean_std(H64)
    em = mean_error(H64, dtype) + UNIT[dtype] * np.abs(want_mean) + TINY[dtype]
    es = std_error(H64, dtype) + UNIT[dtype] * want_std + TINY[dtype]
    for name, B, want, err in [
        ("sign_flip", attacks.sign_flip(H, f), ref.sign_flip(H64), em),
        # the products and sums are taken in H's dtype (NumPy rounds tau to it first): for ipm, tau and the
        # product rounded; for alie, tau, the product and the sum rounded. Rounding tau errs by up to
        # UNIT |tau| + TINY (a subnormal tau: hypothesis drew 1.1e-45, which float32 holds as 1.4e-45), and
        # the product carries that error times |mean| (ipm) or std (alie).
        ("ipm", attacks.ipm(H, tau, f), ref.ipm(H64, tau),
         abs(tau) * em + 2 * UNIT[dtype] * np.abs(tau * want_mean) + TINY[dtype] * (1 + np.abs(want_mean))),
        ("alie", attacks.alie(H, tau, f), ref.alie(H64, tau),
         em + abs(tau) * es + UNIT[dtype] * (np.abs(want_mean) + 3 * np.abs(tau * want_std))
         + TINY[dtype] * (2 + want_std)),
    ]:
        assert tuple(B.shape) == (f, d), name
        assert str(B.dtype) == str((H[0] if isinstance(H, list) else H).dtype)
        for row in to64(B):
            assert np.all(np.abs(row - want) <= err), name


def test_alie_z_from_the_paper():
    # Baruch et al. 2019: n = 50, f = 12 -> s = 14, z = Phi^-1(36 / 50)
    assert attacks.alie_z(50, 12) == pytest.approx(0.5828415, abs=1e-7)
    assert attacks.alie_z(20, 4) == pytest.approx(ref.alie_z(20, 4))
    assert attacks.alie_z(20, 4) == pytest.approx(0.3853205, abs=1e-7)  # s = 7, Phi^-1(13/20)
    H = np.random.default_rng(0).standard_normal((16, 100))
    np.testing.assert_allclose(attacks.alie(H, f=4)[0], ref.alie(H, ref.alie_z(20, 4)), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="s = floor"):
        attacks.alie_z(10, 6)


def test_gaussian_mimic_inf():
    H = torch.randn(8, 50_000)
    B = attacks.gaussian(H, f=3, sigma=2.0, mu=1.0, seed=7)
    assert B.shape == (3, 50_000) and B.dtype == torch.float32
    assert torch.equal(B, attacks.gaussian(H, f=3, sigma=2.0, mu=1.0, seed=7))
    assert not torch.equal(B[0], B[1])  # independent workers
    # 150_000 draws: the sample mean is within 5 standard errors (2 / sqrt(150_000)) of mu
    assert abs(B.double().mean().item() - 1.0) < 5 * 2.0 / math.sqrt(150_000)
    assert abs(B.double().std().item() - 2.0) < 0.05
    M = attacks.mimic(list(H.unbind(0)), f=2, target=3)
    assert torch.equal(M[0], H[3]) and torch.equal(M[1], H[3])
    assert torch.isinf(attacks.inf(H, 2)).all()
    assert attacks.sign_flip(H, 0).shape == (0, 50_000)


def score_error(F64, H64, dtype):
    """The score's kernel error: sigma^2 has (h + 5) u relative error (as std_error, first order), and the
    deviation sum_j (F_j - mean_j)^2 moves by at most 2 sqrt(dev) ||delta|| + ||delta||^2 with delta the
    mean's error; the sums over coordinates are in float64."""
    h = H64.shape[0]
    mean = H64.mean(axis=0)
    sigma2 = float(np.sum((H64 - mean) ** 2)) / (h - 1)
    dev = float(np.sum((F64 - mean) ** 2))
    delta = float(np.linalg.norm(mean_error(H64, dtype) + UNIT[dtype] * 0))
    score = dev / (sigma2 / h)
    ddev = 2 * math.sqrt(dev) * delta + delta**2 + 1e-12 * dev
    rel = (h + 8) * ACC[dtype]
    return score * 2 * rel + ddev / (sigma2 / h) * (1 + 2 * rel)


@given(honest_sets(min_h=2), st.integers(0, 4), st.sampled_from(["mean", "sign_flip", "alie", "honest0"]))
def test_robustness_score_matches_reference(case, f, output):
    H, H64, dtype = case
    h, d = H64.shape
    Hs = H if not isinstance(H, list) else (torch.stack(H) if isinstance(H[0], torch.Tensor) else np.stack(H))
    B = attacks.sign_flip(Hs, f)
    X = torch.cat([Hs, B]) if isinstance(Hs, torch.Tensor) else np.concatenate([Hs, B])
    X64 = to64(X)
    if output == "mean":
        F = X.float().mean(0).to(X.dtype) if isinstance(X, torch.Tensor) else X.mean(0).astype(X.dtype)
    elif output == "alie":
        F = attacks.alie(Hs, 1.5, 1)[0]
    elif output == "sign_flip":
        F = B[0] if f else Hs[1]
    else:
        F = Hs[0]
    F64 = to64(F)
    mean = H64.mean(axis=0)
    sigma2 = float(np.sum((H64 - mean) ** 2))
    honest = list(range(h))
    if sigma2 == 0:  # every honest update is equal: 0 or inf
        got = attacks.robustness_score(F, X, honest)
        assert got == (0.0 if np.array_equal(F64, mean) else math.inf) or (
            got == 0.0 and np.sum((F64 - mean) ** 2) < 1e-300)
        return
    got = attacks.robustness_score(F, X, honest)
    want = ref.robustness_score(F64, X64, honest)
    assert abs(got - want) <= score_error(F64, H64, dtype) + 1e-300, (got, want)
    mask = np.zeros(h + f, bool)
    mask[:h] = True
    assert attacks.robustness_score(F, X, mask) == got


def test_robustness_score_invariants():
    rng = np.random.default_rng(1)
    H = rng.standard_normal((10, 20_000))
    X = np.concatenate([H, np.full((3, 20_000), 5.0)])
    honest = list(range(10))
    assert attacks.robustness_score(H.mean(axis=0), X, honest) == pytest.approx(0.0, abs=1e-20)
    F = X.mean(axis=0)
    s = attacks.robustness_score(F, X, honest)
    # shift and scale invariant: (c X + b, c F + b) has the same score
    assert attacks.robustness_score(3 * F + 7, 3 * X + 7, honest) == pytest.approx(s, rel=1e-10)
    # the honest rows may come in any order and from a list
    assert attacks.robustness_score(F, list(X[::-1].copy()), list(range(3, 13))) == pytest.approx(s, rel=1e-12)
    # for i.i.d. honest updates, the honest mean of a fresh sample scores about 1: E[score] = 1 (h/(h-1) var)
    scores = [attacks.robustness_score(rng.standard_normal((10, 2000)).mean(axis=0) * 0, np.concatenate(
        [rng.standard_normal((10, 2000)), np.zeros((1, 2000))]), honest) for _ in range(3)]
    assert all(0.8 < v < 1.2 for v in scores), scores
    assert attacks.robustness_score(np.full(20_000, np.inf), X, honest) == math.inf


def test_moments_deterministic_whatever_the_thread_count():
    H = np.random.default_rng(2).standard_normal((20, 200_000)).astype(np.float32)
    F = H[0].copy()
    before, results = commkernels.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            commkernels.set_num_threads(threads)
            m, s = attacks.honest_stats(H)
            results.append((m.tobytes(), s.tobytes(), attacks.robustness_score(F, H, range(20))))
    finally:
        commkernels.set_num_threads(before)
    assert results[0] == results[1] == results[2]


def test_optimal_attacks_search():
    rng = np.random.default_rng(3)
    H = rng.standard_normal((16, 3000)) + 0.5
    mean_rule = lambda X: np.mean(np.stack(X), axis=0)  # noqa: E731
    B, tau = attacks.optimal_ipm(H, 4, mean_rule)
    assert tau == pytest.approx(100.0)  # the mean's damage grows with tau: the search goes to the end
    np.testing.assert_allclose(B[0], -100.0 * H.mean(axis=0), rtol=1e-12)
    median_rule = lambda X: np.median(np.stack(X), axis=0)  # noqa: E731
    grid = np.geomspace(1e-2, 1e2, 17)
    B, tau = attacks.optimal_alie(H, 4, median_rule, iters=6)

    def damage(t):
        return float(np.sum((median_rule(list(H) + [ref.alie(H, t)] * 4) - H.mean(axis=0)) ** 2))

    assert damage(tau) >= max(damage(t) for t in grid) * (1 - 1e-12)
    assert damage(tau) >= damage(attacks.alie_z(20, 4))
    np.testing.assert_allclose(B[1], ref.alie(H, tau), rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match="rule"):
        attacks.optimal_alie(H, 4, "median")


def test_attacks_bad_inputs():
    H = np.zeros((5, 10), np.float32)
    with pytest.raises(ValueError, match="H"):
        attacks.honest_stats(H[:1])
    with pytest.raises(ValueError, match="f"):
        attacks.sign_flip(H, -1)
    with pytest.raises(ValueError, match="tau"):
        attacks.ipm(H, math.inf)
    with pytest.raises(ValueError, match="target"):
        attacks.mimic(H, 1, 5)
    with pytest.raises(ValueError, match="honest"):
        attacks.robustness_score(H[0], H, [0])
    with pytest.raises(ValueError, match="honest"):
        attacks.robustness_score(H[0], H, [0, 7])
    with pytest.raises(ValueError, match="honest"):
        attacks.robustness_score(H[0], H, [1, 1])
    with pytest.raises(ValueError, match="F"):
        attacks.robustness_score(H[0, :5], H, [0, 1])
    with pytest.raises(TypeError, match="F"):
        attacks.robustness_score(torch.zeros(10), H, [0, 1])
    with pytest.raises(ValueError, match="sigma"):
        attacks.gaussian(H, 1, sigma=-1.0)


def test_moments_torch_op():
    X = torch.randn(6, 3000)
    torch.library.opcheck(_moments_op, ([X], True, None, True, True))
    torch.library.opcheck(_moments_op, (list(X.unbind(0)), False, X[0].clone(), False, False))
    torch.library.opcheck(_moments_op, ([X.bfloat16()], True, X[0].clone(), True, False))


def test_cuda_matches_cpu(device):
    H = torch.randn(12, 30_000, device=device)
    m, s = attacks.honest_stats(H)
    mc, sc = attacks.honest_stats(H.cpu())
    assert m.device.type == device
    torch.testing.assert_close(m.cpu(), mc, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s.cpu(), sc, rtol=1e-6, atol=1e-6)
    F = H.mean(0) + 0.1
    assert attacks.robustness_score(F, H, range(12)) == pytest.approx(
        attacks.robustness_score(F.cpu(), H.cpu(), range(12)), rel=1e-6)
