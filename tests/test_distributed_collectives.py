"""robust_all_reduce, gossip, push_sum and dispatch/combine in worlds of 2 and 4 gloo ranks, against the
spec's single-process definitions computed here in NumPy (float64) or torch.

The worlds are those of test_distributed_hooks (one subprocess, ``_distributed_world.shared_run``); each
rank's inputs are seeded functions of its rank, so this process rebuilds all of them.
"""

from __future__ import annotations

import datetime
import importlib.util
import math
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _distributed_world as world  # noqa: E402

WORLDS = (2, 4)
U32 = 2.0 ** -24


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    outdir = world.shared_run(tmp_path_factory, WORLDS)
    return {n: [torch.load(os.path.join(outdir, f"w{n}", f"collectives-rank{r}.pt")) for r in range(n)]
            for n in WORLDS}


def _inputs(n):
    return np.stack([world.rank_tensor(r).double().numpy() for r in range(n)])


def _same_on_every_rank(res, key):
    for r in res[1:]:
        assert torch.equal(r[key], res[0][key])


def _within_float32_sum(out, W, X):
    """out (float32 rows) against W X in float64, within the float32 bound of each row's weighted sum:
    (terms + 1) u sum_j |W[i, j] x_j| (one rounding per product, the sum, the final rounding)."""
    exact = W @ X
    terms = (W != 0).sum(1, keepdims=True)
    bound = (terms + 1) * U32 * (np.abs(W) @ np.abs(X)) + 1e-30
    err = np.abs(out - exact)
    assert (err <= bound).all(), f"max excess {float((err - bound).max())}"


@pytest.mark.parametrize("n", WORLDS)
def test_robust_all_reduce_equals_the_rule_on_the_stacked_inputs(results, n):
    res = results[n]
    _same_on_every_rank(res, "robust_callable")
    X = torch.from_numpy(_inputs(n)).float()
    expected = world.trimmed_mean_rule(X, (n - 1) // 2)  # the same rule, in one process, on the stack
    assert torch.equal(res[0]["robust_callable"], expected)


@pytest.mark.parametrize("n", WORLDS)
def test_robust_all_reduce_by_name(results, n):
    res = results[n]
    if importlib.util.find_spec("commkernels.aggregate") is None:
        for r in res:
            assert "commkernels.aggregate is not available" in r["robust_named_error"]
        return
    import commkernels.aggregate as agg

    X = torch.from_numpy(_inputs(n)).float()
    for key, expected in (("robust_median", agg.median(X)), ("robust_trimmed_mean", agg.trimmed_mean(X, (n - 1) // 2))):
        _same_on_every_rank(res, key)
        assert torch.equal(res[0][key], expected)


@pytest.mark.parametrize("n", WORLDS)
def test_gossip_is_one_round_of_W_X(results, n):
    X = _inputs(n)
    out = np.stack([r["gossip_static"].double().numpy() for r in results[n]])
    _within_float32_sum(out, world.static_mixing(n), X)
    # time-varying: step 1 of the callable graph is the static matrix
    out = np.stack([r["gossip_time_varying"].double().numpy() for r in results[n]])
    _within_float32_sum(out, world.static_mixing(n), X)


def test_one_peer_exponential_matrix():
    from commkernels.distributed import one_peer_exponential

    for n in (2, 3, 4, 8):
        tau = math.ceil(math.log2(n))
        for step in range(2 * tau):
            W = one_peer_exponential(n, step)
            hop = 2 ** (step % tau)
            assert np.allclose(W.sum(1), 1) and np.allclose(W.sum(0), 1)
            for i in range(n):
                assert W[i, (i - hop) % n] == 0.5
        if n & (n - 1) == 0:  # a power of two: the exact average after tau steps
            M = np.eye(n)
            for step in range(tau):
                M = one_peer_exponential(n, step) @ M
            assert np.allclose(M, np.full((n, n), 1 / n), rtol=0, atol=1e-15)


@pytest.mark.parametrize("n", WORLDS)
def test_gossip_skips_a_zero_self_weight(results, n):
    # rank 0 sends inf and has W[0, 0] = 0: it receives rank 1's tensor exactly (0 * inf would be NaN)
    assert torch.equal(results[n][0]["gossip_shift_from_inf"], world.rank_tensor(1))
    assert torch.isinf(results[n][n - 1]["gossip_shift_from_inf"]).all()  # rank n-1 receives rank 0's inf


@pytest.mark.parametrize("n", WORLDS)
def test_one_peer_exponential_gossip_reaches_the_exact_average(results, n):
    X = _inputs(n)
    out = np.stack([r["gossip_one_peer"].double().numpy() for r in results[n]])
    # tau rounds of (x_i + x_j) / 2: each a float32 add and an exact halving, tau roundings in all
    tau = math.ceil(math.log2(n))
    bound = 2 * tau * U32 * np.abs(X).sum(0) / n * n
    assert (np.abs(out - X.mean(0)) <= bound).all()


@pytest.mark.parametrize("n", WORLDS)
def test_push_sum_is_P_cubed_on_values_and_weights(results, n):
    P = world.push_sum_matrix(n)
    P3 = np.linalg.matrix_power(P, 3)
    X = _inputs(n)
    xs = np.stack([r["push_sum"][0].double().numpy() for r in results[n]])
    ws = np.array([float(r["push_sum"][1]) for r in results[n]])
    exact = P3 @ X
    bound = 3 * (n + 2) * U32 * (np.linalg.matrix_power(np.abs(P), 3) @ np.abs(X))
    assert (np.abs(xs - exact) <= bound).all()
    np.testing.assert_allclose(ws, P3 @ np.ones(n), rtol=10 * U32)
    # mass is conserved: the weights sum to n and the estimates' weighted sum is the inputs' sum
    assert abs(ws.sum() - n) < 10 * n * U32
    assert not np.allclose(ws, 1.0)  # P is not doubly stochastic: the weights must matter


@pytest.mark.parametrize("n", WORLDS)
def test_dispatch_sends_each_experts_rows_to_its_rank_and_combine_brings_them_back(results, n):
    E = 2 * n
    local = E // n
    per_rank = []
    for r in range(n):
        experts, tokens = world.expert_assignment(r, E)
        order = torch.sort(experts, stable=True).indices
        per_rank.append((experts[order], tokens[order]))
    for r, res in enumerate(results[n]):
        # received: from each source rank in order, its rows of my experts, in expert order
        mine = [(src_e, src_x) for src_e, src_x in per_rank]
        expected = torch.cat([x[(e >= r * local) & (e < (r + 1) * local)] for e, x in mine])
        assert torch.equal(res["dispatch_rows"], expected)
        counts = torch.stack([torch.bincount(e, minlength=E)[r * local:(r + 1) * local] for e, _ in mine])
        assert torch.equal(res["dispatch_counts"], counts)
        # back home: every row multiplied by its expert's id + 1, in the original (expert) order
        e, x = per_rank[r]
        assert torch.equal(res["combined"], x * (e.float() + 1)[:, None])
        assert torch.equal(res["roundtrip"], x)
        assert torch.equal(res["padded_roundtrip"], torch.cat([x, torch.zeros(2, x.shape[1])]))


@pytest.mark.parametrize("n", WORLDS)
def test_gossip_with_a_graph_is_gossip_with_its_matrix(results, n):
    if importlib.util.find_spec("commkernels.graph") is None:
        pytest.skip("commkernels.graph is not installed")
    for r in results[n]:
        assert torch.equal(r["gossip_graph"], r["gossip_static"])


@pytest.mark.parametrize("align", [1, 4])
@pytest.mark.parametrize("n", WORLDS)
def test_expert_parallel_moe_layer_equals_the_single_process_layer(results, n, align):
    """moe.plan -> moe.permute -> dispatch -> experts on their ranks -> combine -> moe.combine equals the
    same layer with every expert in one process (plan, permute, experts, combine), bitwise."""
    if importlib.util.find_spec("commkernels.moe") is None:
        pytest.skip("commkernels.moe is not installed")
    from commkernels import moe

    E = 2 * n
    for r, res in enumerate(results[n]):
        ids, weights, tokens = world.routing(r, E)
        p = moe.plan(ids, E, align=align)
        rows = world.experts_apply(moe.permute(tokens, p), p.offsets)
        assert torch.equal(res[f"moe_layer_align{align}"], moe.combine(rows, p, weights))


# ---- argument checks (a world of one, in this process) -------------------------------------------------

@pytest.fixture
def single_rank_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=30))
    yield
    dist.destroy_process_group()


def test_collectives_check_their_arguments(single_rank_group):
    import commkernels.distributed as ckd

    x = torch.randn(5)
    with pytest.raises(TypeError, match="rule"):
        ckd.robust_all_reduce(x, 3, f=0)
    with pytest.raises(ValueError, match="f"):
        ckd.robust_all_reduce(x, world.trimmed_mean_rule, f=-1)
    with pytest.raises(TypeError, match="tensor"):
        ckd.robust_all_reduce(np.zeros(5), world.trimmed_mean_rule, f=0)
    with pytest.raises(TypeError, match="tensor"):
        ckd.gossip(torch.arange(5), np.eye(1))
    with pytest.raises(ValueError, match="graph"):
        ckd.gossip(x, np.eye(2))
    with pytest.raises(ValueError, match="graph"):
        ckd.gossip(x, "ring")
    with pytest.raises(ValueError, match="column-stochastic"):
        ckd.push_sum(x, torch.ones(1), np.full((1, 1), 0.5))
    with pytest.raises(ValueError, match="weight"):
        ckd.push_sum(x, torch.ones(2), np.eye(1))
    with pytest.raises(ValueError, match="rows"):
        ckd.dispatch(torch.randn(4, 3), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="rows"):
        ckd.combine(torch.randn(2, 3), ckd.dispatch(torch.randn(3, 3), torch.tensor([1, 2])))
    # a world of one: everything is the identity
    assert torch.equal(ckd.gossip(x, np.eye(1)), x)
    assert torch.equal(ckd.robust_all_reduce(x, world.trimmed_mean_rule, f=0), x)
    seen = {}

    def no_f(X):  # a rule without f: robust_all_reduce does not pass it
        seen["X"] = X
        return X[0] * 2

    assert torch.equal(ckd.robust_all_reduce(x.view(5, 1), no_f, f=0), x.view(5, 1) * 2)
    assert seen["X"].shape == (1, 5, 1)
    d = ckd.dispatch(torch.arange(6.0).view(3, 2), torch.tensor([2, 1]))
    assert torch.equal(ckd.combine(d.rows * 2, d), torch.arange(6.0).view(3, 2) * 2)
