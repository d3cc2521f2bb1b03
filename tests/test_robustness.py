"""The robust rules stay within their theoretical robustness bounds under every attack of commkernels.attacks,
and the mean does not (its score grows with the attack's magnitude).

Bound: a rule F is (f, kappa)-robust (Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan, "Fixing by
Mixing", AISTATS 2023, Definition 2) when for every set S of n - f honest inputs
    ||F(x_1..x_n) - xbar_S||^2 <= (kappa / |S|) sum_{i in S} ||x_i - xbar_S||^2.
With sigma_H^2 = sum_{i in S} ||x_i - xbar_S||^2 / (|S| - 1) (commkernels.attacks.robustness_score), this is
    score = ||F - xbar_S||^2 / (sigma_H^2 / |S|) <= kappa (|S| - 1),
whatever the Byzantine inputs are. Their Table 1 (with r = f / (n - 2f)):
    coordinate-wise trimmed mean  kappa = 6 r (1 + r)          coordinate-wise median  kappa = 4 (1 + r)^2
    Krum                          kappa = 6 (1 + r)            geometric median        kappa = 4 (1 + r)^2
and NNM followed by F (their Lemma 1): kappa' = 8 f / (n - f) (kappa + 1).
The bounds are worst-case guarantees of the exact rules. The kernels compute in float32 and the geometric
median is an approximate (smoothed Weiszfeld) solution: we allow 5% on top, far below the distance between
these bounds and the mean's scores here.

Rules that this build of commkernels.aggregate does not have are skipped (with their name).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from commkernels import aggregate, attacks

N, F_BYZ, D = 11, 2, 400
H_COUNT = N - F_BYZ
R = F_BYZ / (N - 2 * F_BYZ)
SLACK = 1.05


def _kappa_nnm(kappa: float) -> float:
    return 8 * F_BYZ / (N - F_BYZ) * (kappa + 1)


# name -> (functions needed, rule, kappa)
RULES = {
    "median": (["median"], lambda X: aggregate.median(X), 4 * (1 + R) ** 2),
    "trimmed_mean": (["trimmed_mean"], lambda X: aggregate.trimmed_mean(X, F_BYZ), 6 * R * (1 + R)),
    "krum": (["krum"], lambda X: aggregate.krum(X, F_BYZ), 6 * (1 + R)),
    "geometric_median": (["geometric_median"], lambda X: aggregate.geometric_median(X), 4 * (1 + R) ** 2),
    "nnm+trimmed_mean": (["nnm", "trimmed_mean"], lambda X: aggregate.trimmed_mean(aggregate.nnm(X, F_BYZ), F_BYZ),
                         _kappa_nnm(6 * R * (1 + R))),
    "nnm+krum": (["krum", "nnm"], lambda X: aggregate.krum(X, F_BYZ, pre=("nnm", {"f": F_BYZ})),
                 _kappa_nnm(6 * (1 + R))),
}

ATTACKS = {
    "sign_flip": lambda H, rule: attacks.sign_flip(H, F_BYZ),
    "ipm(0.1)": lambda H, rule: attacks.ipm(H, 0.1, F_BYZ),
    "ipm(1e3)": lambda H, rule: attacks.ipm(H, 1e3, F_BYZ),
    "alie(z)": lambda H, rule: attacks.alie(H, None, F_BYZ, N),
    "alie(30)": lambda H, rule: attacks.alie(H, 30.0, F_BYZ),
    "gaussian(1e3)": lambda H, rule: attacks.gaussian(H, F_BYZ, sigma=1e3, seed=3),
    "mimic": lambda H, rule: attacks.mimic(H, F_BYZ),
    "inf": lambda H, rule: attacks.inf(H, F_BYZ),
    "optimal_alie": lambda H, rule: attacks.optimal_alie(H, F_BYZ, rule, iters=3)[0],
    "optimal_ipm": lambda H, rule: attacks.optimal_ipm(H, F_BYZ, rule, iters=3)[0],
}


def honest(kind: str) -> np.ndarray:
    rng = np.random.default_rng(11)
    g = rng.standard_normal(D)
    noise = rng.standard_normal((H_COUNT, D)) if kind == "gaussian" else rng.standard_t(3, (H_COUNT, D))
    return (g + noise).astype(np.float32)


def score(rule, H, B) -> float:
    X = list(H) + list(B)
    return attacks.robustness_score(rule(X), X, list(range(H_COUNT)))


@pytest.mark.parametrize("kind", ["gaussian", "student_t"])
@pytest.mark.parametrize("name", list(RULES))
def test_robust_rules_stay_within_their_bound(name, kind):
    needs, rule, kappa = RULES[name]
    missing = [x for x in needs if not hasattr(aggregate, x)]
    if missing:
        pytest.skip(f"commkernels.aggregate has no {', '.join(missing)} in this build")
    H = honest(kind)
    limit = SLACK * kappa * (H_COUNT - 1)
    scores = {attack: score(rule, H, make(H, rule)) for attack, make in ATTACKS.items()}
    bad = {a: s for a, s in scores.items() if not s <= limit}  # NaN and inf fail too
    assert not bad, f"{name}: scores above kappa (|H| - 1) = {limit:.3g}: {bad}"


def test_the_mean_is_not_robust():
    H = honest("gaussian")
    mean_h = H.astype(np.float64).mean(axis=0)
    sigma2 = float(((H - mean_h) ** 2).sum()) / (H_COUNT - 1)
    largest_bound = max(kappa for _, _, kappa in RULES.values()) * (H_COUNT - 1)
    previous = 0.0
    for tau in (1.0, 10.0, 100.0, 1e3):
        s = score(aggregate.mean, H, attacks.ipm(H, tau, F_BYZ))
        # mean(X) - mean_H = -(f / n)(1 + tau) mean_H exactly: the score grows as (1 + tau)^2
        want = (F_BYZ / N) ** 2 * (1 + tau) ** 2 * float(mean_h @ mean_h) / (sigma2 / H_COUNT)
        assert s == pytest.approx(want, rel=1e-4)
        assert s > previous
        previous = s
    assert previous > 100 * largest_bound
    assert score(aggregate.mean, H, attacks.alie(H, 1e3, F_BYZ)) > 100 * largest_bound
    assert score(aggregate.mean, H, attacks.inf(H, F_BYZ)) == math.inf


def test_the_example_runs_on_a_small_instance():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "robustness.py"
    spec = importlib.util.spec_from_file_location("robustness_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    results, skipped = example.run(n=11, f=2, d=64, progress=lambda *a: None)
    assert set(results) == {"gaussian", "student_t(3)"}
    for table in results.values():
        assert table["mean"]["inf"] == math.inf and table["mean"]["ipm(100)"] > 100
        present = set(table) | {s.split(" ")[0] for s in skipped}
        assert present == set(example.rules(11, 2))
        for name, row in table.items():
            if name != "mean":
                assert math.isfinite(row["inf"]), name  # no robust rule lets an inf through
    assert "honest updates: gaussian" in example.format_table(results)
