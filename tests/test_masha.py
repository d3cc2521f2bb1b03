"""The MASHA reproduction (examples/masha.py) on a small instance (M = 10, d = 100, k = 10, L/mu ~ 30):
both compressed methods reach the set accuracy, and MASHA1 (Rand-k) does so with fewer uplink bits per
worker than uncompressed extragradient (about 0.84x here, with the step sizes the variance bound gives).

Open (issue 3): MASHA2 (Top-k + error feedback) sends about 1.1x the bits of extragradient on this
instance and 0.99x on the example's default one (Top-k's indices cost bits; on a dense random problem it
saves no iterations over Rand-k). The algorithms were written without the paper's text at hand, so no
test asserts the direction of MASHA2's comparison: it would cement an unverified result either way."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import numpy as np
import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "examples" / "masha.py"
_spec = importlib.util.spec_from_file_location("masha_example", _PATH)
masha = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = masha  # dataclasses look the module up
_spec.loader.exec_module(masha)

ACCURACY = 1e-2
INSTANCE = dict(workers=10, dim=100, k=10, conditioning=30.0, accuracy=ACCURACY, iterations=6000)


def test_solution_solves_the_optimality_system():
    problem = masha.make_problem(4, 6, 5, seed=3)
    z = problem.solution()
    np.testing.assert_allclose(problem.full_operator(z), 0.0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_masha_reaches_accuracy_and_masha1_sends_fewer_bits(seed):
    eg, m1, m2 = masha.run(seed=seed, **INSTANCE)
    budget = eg.bits_to_reach(ACCURACY)
    assert np.isfinite(budget)
    for trace in (m1, m2):
        assert trace.distance[-1] <= ACCURACY, trace.name
        assert np.isfinite(trace.bits_to_reach(ACCURACY)), trace.name
    assert m1.bits_to_reach(ACCURACY) < budget, (m1.bits_to_reach(ACCURACY), budget)


def test_masha_is_reproducible():
    # Rand-k draws from (seed, step), the server's bit from a seeded generator: same seed, same run.
    problem = masha.make_problem(3, 20, 20, seed=2)
    a, b = masha.masha1(problem, 4, 200, seed=5), masha.masha1(problem, 4, 200, seed=5)
    assert a.distance == b.distance and a.bits == b.bits
    c, d = masha.masha2(problem, 4, 200, seed=5), masha.masha2(problem, 4, 200, seed=5)
    assert c.distance == d.distance and c.bits == d.bits
