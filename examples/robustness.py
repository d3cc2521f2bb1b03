"""Robustness of commkernels.aggregate's rules under commkernels.attacks: a table rule x attack of
robustness_score on synthetic data, and a plot.

    python examples/robustness.py [--n 20] [--f 4] [--d 100000] [--plot robustness.png]

Honest updates: x_i = g + noise_i, with g a fixed "true gradient" (standard normal entries) and noise either
Gaussian (unit variance) or heavy-tailed (Student-t with 3 degrees of freedom). The f Byzantine workers
send one of the attacks; the score is ||F(X) - mean_H||^2 / (sigma_H^2 / |H|) (commkernels.attacks): about
1 is what the honest workers alone would get from averaging, and a rule is (f, kappa)-robust (Allouah et
al. 2023) when the score never exceeds kappa (|H| - 1) whatever the attack.

Rules are looked up by name in commkernels.aggregate with their spec signatures; a rule that does not exist
in this build is skipped (and named). matplotlib is optional: without it the plot is skipped.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from commkernels import aggregate, attacks


def rules(n: int, f: int) -> dict:
    """name -> (the aggregate functions it needs, a callable X -> F)."""
    A = aggregate

    def cc(X):
        center = A.median(X)
        tau = float(np.median([np.linalg.norm(x - center) for x in X]))  # clip at the typical honest distance
        return A.centered_clipping(X, center, tau, 3)

    return {
        "mean": (["mean"], lambda X: A.mean(X)),
        "median": (["median"], lambda X: A.median(X)),
        "trimmed_mean": (["trimmed_mean"], lambda X: A.trimmed_mean(X, f)),
        "meamed": (["meamed"], lambda X: A.meamed(X, f)),
        "phocas": (["phocas"], lambda X: A.phocas(X, f)),
        "krum": (["krum"], lambda X: A.krum(X, f)),
        "multi_krum": (["krum"], lambda X: A.krum(X, f, m=n - f)),
        "geometric_median": (["geometric_median"], lambda X: A.geometric_median(X)),
        "bulyan": (["bulyan"], lambda X: A.bulyan(X, f)),
        "centered_clipping": (["centered_clipping", "median"], cc),
        "mda": (["mda"], lambda X: A.mda(X, f)),
        "nnm+trimmed_mean": (["nnm", "trimmed_mean"], lambda X: A.trimmed_mean(A.nnm(X, f), f)),
        "nnm+krum": (["krum", "nnm"], lambda X: A.krum(X, f, pre=("nnm", {"f": f}))),
        "arc+mean": (["arc", "mean"], lambda X: A.mean(A.arc(X, f))),
        "flag": (["flag"], lambda X: A.flag(X)),
    }


def attack_list(f: int, n: int) -> dict:
    """name -> callable (H, rule) -> B, the f Byzantine updates."""
    return {
        "none": None,
        "sign_flip": lambda H, rule: attacks.sign_flip(H, f),
        "ipm(0.1)": lambda H, rule: attacks.ipm(H, 0.1, f),
        "ipm(100)": lambda H, rule: attacks.ipm(H, 100.0, f),
        "alie(z)": lambda H, rule: attacks.alie(H, None, f, n),
        "gaussian(200)": lambda H, rule: attacks.gaussian(H, f, sigma=200.0, seed=1),
        "mimic": lambda H, rule: attacks.mimic(H, f),
        "inf": lambda H, rule: attacks.inf(H, f),
        "optimal_alie": lambda H, rule: attacks.optimal_alie(H, f, rule, iters=4)[0],
        "optimal_ipm": lambda H, rule: attacks.optimal_ipm(H, f, rule, iters=4)[0],
    }


def honest_updates(kind: str, h: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(d)
    noise = rng.standard_normal((h, d)) if kind == "gaussian" else rng.standard_t(3, (h, d))
    return (g + noise).astype(np.float32)


def run(n: int, f: int, d: int, seed: int = 0, progress=print) -> tuple[dict, list]:
    """{distribution: {rule: {attack: score}}} and the skipped rules."""
    h = n - f
    available, skipped = {}, []
    for name, (needs, fn) in rules(n, f).items():
        missing = [x for x in needs if not hasattr(aggregate, x)]
        if missing:
            skipped.append(f"{name} (no aggregate.{', aggregate.'.join(missing)})")
        else:
            available[name] = fn
    results = {}
    for kind in ("gaussian", "student_t(3)"):
        H = honest_updates("gaussian" if kind == "gaussian" else "t", h, d, seed)
        honest = list(range(h))
        table = results[kind] = {}
        for name, rule in available.items():
            row = table[name] = {}
            start = time.perf_counter()
            for attack, make in attack_list(f, n).items():
                X = list(H) if make is None else list(H) + list(make(H, rule))
                if make is None:  # no attack: the n workers are all honest
                    X = list(honest_updates("gaussian" if kind == "gaussian" else "t", n, d, seed))
                    honest_here = list(range(n))
                else:
                    honest_here = honest
                try:
                    row[attack] = attacks.robustness_score(rule(X), X, honest_here)
                except ValueError as error:  # a rule whose bound on n and f fails here
                    row[attack] = math.nan
                    progress(f"  {name} / {attack}: {error}")
            progress(f"{kind:>13} {name:<18} {time.perf_counter() - start:6.2f} s")
    return results, skipped


def format_table(results: dict) -> str:
    lines = []
    for kind, table in results.items():
        attacks_ = list(next(iter(table.values())).keys()) if table else []
        lines.append(f"\nhonest updates: {kind}   (score = ||F - mean_H||^2 / (sigma_H^2 / |H|))")
        lines.append(f"{'rule':<18}" + "".join(f"{a:>14}" for a in attacks_))
        for name, row in table.items():
            lines.append(f"{name:<18}" + "".join(f"{_fmt(row[a]):>14}" for a in attacks_))
    return "\n".join(lines)


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "inf"
    return f"{v:.3g}"


def plot(results: dict, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plot")
        return
    fig, axes = plt.subplots(len(results), 1, figsize=(14, 5 * len(results)), squeeze=False)
    for ax, (kind, table) in zip(axes[:, 0], results.items()):
        names = list(table)
        attacks_ = list(next(iter(table.values())).keys())
        width = 0.8 / len(attacks_)
        for k, attack in enumerate(attacks_):
            values = [table[r][attack] for r in names]
            shown = [min(v, 1e12) if not math.isnan(v) else 0 for v in values]  # inf drawn at the top
            ax.bar(np.arange(len(names)) + k * width, shown, width, label=attack)
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(names)) + 0.4)
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.set_ylabel("robustness score")
        ax.set_title(f"honest updates: {kind} (inf shown at 1e12)")
        ax.legend(ncol=5, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot saved to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--f", type=int, default=4)
    parser.add_argument("--d", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="robustness.png", help="where to save the plot ('' for none)")
    args = parser.parse_args()
    results, skipped = run(args.n, args.f, args.d, args.seed)
    if skipped:
        print("skipped (not in this build of commkernels.aggregate): " + "; ".join(skipped))
    print(format_table(results))
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
