"""commkernels.distributed's DDP communication hooks against single-process computations of the same thing.

One subprocess runs a world of 2 ranks, then one of 4 (gloo, spawned on localhost, ``_distributed_world``,
hard-bounded in time); in each, every hook trains the same small MLP under DDP for a few steps, with
buckets small enough that DDP rebuilds them after the first step, and records per bucket call its
parameters, its input (the local gradient) and its output. Here, in one process, we recompute:

- the local gradients of every rank's batch at the parameters that SGD with the recorded outputs gives;
- the hook's result from all ranks' inputs: the compressors of ``commkernels.compress`` applied per rank
  with residuals kept per parameter (so a rebuild moves them, as the hook must), and the mean over ranks
  (PowerSGD: in float64 from ``reference.ef``);
- the final parameters, and the bytes each rank sent.
"""

from __future__ import annotations

import datetime
import math
import os
import sys
import time

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _distributed_world as world  # noqa: E402

import commkernels.compress as ck  # noqa: E402
from commkernels.reference import ef as ref_ef  # noqa: E402

WORLDS = (2, 4)
U32 = 2.0 ** -24  # float32 unit roundoff
WORLD_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    outdir = world.shared_run(tmp_path_factory, WORLDS, timeout=WORLD_TIMEOUT_S)
    return {n: [torch.load(os.path.join(outdir, f"w{n}", f"hooks-rank{r}.pt")) for r in range(n)] for n in WORLDS}


def _shapes():
    return [p.shape for p in world.make_model().parameters()]


def _flat(tensors, positions):
    return torch.cat([tensors[i].reshape(-1) for i in positions])


def _split_into(flat, tensors, positions):
    at = 0
    for i in positions:
        n = tensors[i].numel()
        tensors[i].copy_(flat[at:at + n].view_as(tensors[i]))
        at += n


def _count_k(ratio, n):
    return min(n, max(1, math.ceil(ratio * n)))


def _close_to_mean(out, parts, n_extra_roundings=0):
    """out (float32) against the float64 mean of parts, within the error bound of a float32 sum: each
    element off by at most (len(parts) - 1 + n_extra_roundings + 1) u sum_r |part_r| / len(parts)."""
    n = len(parts)
    stacked = torch.stack([p.double() for p in parts])
    exact = stacked.mean(0)
    bound = (n + n_extra_roundings) * U32 * stacked.abs().sum(0) / n
    err = (out.double() - exact).abs()
    assert bool((err <= bound).all()), f"max error {float((err - bound).max())} beyond the float32 bound"


# ---- the simulations: one per hook, from every rank's recorded inputs ------------------------------------

def _simulate_topk(steps, n_ranks, shapes, kw):
    res = [[torch.zeros(s) for s in shapes] for _ in range(n_ranks)]
    for calls in steps:
        inputs, positions = [c["input"] for c in calls], calls[0]["params"]
        d = inputs[0].numel()
        k = _count_k(kw["ratio"], d)
        dense, packed = [], []
        for r in range(n_ranks):
            flat = _flat(res[r], positions)
            msg = ck.ef_topk_(inputs[r], flat, k)
            _split_into(flat, res[r], positions)
            dense.append(ck.decompress(msg))
            if kw.get("index_codec") is not None:
                packed.append(ck.nbytes(msg, kw["index_codec"]))
        # raw: k float32 values + k int32 indices; packed: the lengths (8 bytes) + the longest buffer
        yield dense, None, (8 + max(packed)) if packed else k * 8


def _simulate_randk(steps, n_ranks, shapes, kw):
    ef = kw.get("error_feedback", True)
    res = [[torch.zeros(s) for s in shapes] for _ in range(n_ranks)]
    for calls in steps:
        inputs, positions = [c["input"] for c in calls], calls[0]["params"]
        d = inputs[0].numel()
        k = _count_k(kw["ratio"], d)
        step = (calls[0]["step"] << 20) | calls[0]["index"]
        idx = torch.from_numpy(ck.randk_indices(d, k, kw["seed"], step).astype(np.int64))
        dense = []
        for r in range(n_ranks):
            sent = torch.zeros(d, dtype=torch.float64)
            if ef:
                p = _flat(res[r], positions) + inputs[r]
                sent[idx] = p[idx].double()
                p[idx] = 0
                _split_into(p, res[r], positions)
            else:
                sent[idx] = inputs[r][idx].double() * d / k
            dense.append(sent)
        yield dense, idx, k * 4


def _simulate_sign(steps, n_ranks, shapes, kw):
    res = [[torch.zeros(s) for s in shapes] for _ in range(n_ranks)]
    server = [torch.zeros(s) for s in shapes]
    for calls in steps:
        inputs, positions = [c["input"] for c in calls], calls[0]["params"]
        d = inputs[0].numel()
        mean = torch.zeros(d)
        for r in range(n_ranks):  # float32, in rank order, as every rank adds them
            flat = _flat(res[r], positions)
            mean += ck.sign_decompress(ck.sign_compress_ef_(inputs[r], flat, kw["scale"]))
            _split_into(flat, res[r], positions)
        mean /= n_ranks
        flat = _flat(server, positions)
        out = ck.sign_decompress(ck.sign_compress_ef_(mean, flat, kw["scale"]))
        _split_into(flat, server, positions)
        yield out, None, (d + 7) // 8 + 4


def _simulate_qsgd(steps, n_ranks, shapes, kw):
    res = [[torch.zeros(s) for s in shapes] for _ in range(n_ranks)]
    levels, bucket = kw["levels"], kw["bucket_size"]
    for calls in steps:
        inputs, positions = [c["input"] for c in calls], calls[0]["params"]
        d = inputs[0].numel()
        step = (calls[0]["step"] << 20) | calls[0]["index"]
        mean = torch.zeros(d)
        for r in range(n_ranks):
            seed = (kw["seed"] ^ (r * 0x9E3779B97F4A7C15)) % 2**64
            flat = _flat(res[r], positions)
            mean += ck.qsgd_decompress(ck.qsgd_ef_(inputs[r], flat, levels, seed, step, bucket))
            _split_into(flat, res[r], positions)
        mean /= n_ranks
        code_bits = 1 + levels.bit_length()
        yield mean, None, (d * code_bits + 7) // 8 + 4 * -(-d // bucket)


def _simulate_powersgd(steps, n_ranks, shapes, kw):
    rank = kw["rank"]
    generator = torch.Generator().manual_seed(kw["seed"])
    res = [[np.zeros(s) for s in shapes] for _ in range(n_ranks)]
    qs = {}
    for calls in steps:
        positions = calls[0]["params"]
        pieces = [[] for _ in range(n_ranks)]
        for r, c in enumerate(calls):  # A = M + residual, per parameter, float64
            at = 0
            for i in positions:
                n = math.prod(shapes[i])
                pieces[r].append(c["input"][at:at + n].double().numpy().reshape(shapes[i]) + res[r][i])
                at += n
        out, sent = [], 0
        for j, i in enumerate(positions):
            a = [pieces[r][j] for r in range(n_ranks)]
            shape = shapes[i]
            n, m = (shape[0], math.prod(shape) // shape[0]) if len(shape) >= 2 else (None, None)
            r_eff = min(n, m, rank) if n else 0
            if n is None or not (n + m) * r_eff * 2.0 < n * m:
                approx = sum(a) / n_ranks
                sent += math.prod(shape)
            else:
                mats = [x.reshape(n, m) for x in a]
                if i not in qs:
                    qs[i] = torch.randn(m, r_eff, generator=generator).double().numpy()
                p = ref_ef.orthogonalize(sum(x @ qs[i] for x in mats) / n_ranks, 1e-8, "float32")
                qs[i] = sum(x.T @ p for x in mats) / n_ranks
                approx = (p @ qs[i].T).reshape(shape)
                sent += (n + m) * r_eff
            for r in range(n_ranks):
                res[r][i] = pieces[r][j] - approx
            out.append(approx.reshape(-1))
        yield torch.from_numpy(np.concatenate(out)), "powersgd", sent * 4


SIMULATIONS = {"TopKState": _simulate_topk, "RandKState": _simulate_randk, "SignState": _simulate_sign,
               "QsgdState": _simulate_qsgd, "PowerSGDState": _simulate_powersgd}


def _check_output(out, expected, how):
    if how == "powersgd":
        # float32 hook vs float64 simulation: products of <= 16 terms and a Gram-Schmidt of a 12 x 2 and
        # an 8 x 2 matrix per step, 3 steps: errors of order 10 u times the condition number of A Q.
        # 1e-4 (~1700 u) allows condition numbers up to ~100, far above what random 12 x 16 data gives.
        err = float((out.double() - expected).norm() / expected.norm())
        assert err < 1e-4, f"relative error {err}"
    elif isinstance(expected, list):  # per-rank dense messages: the mean within the float32-sum bound
        _close_to_mean(out, expected, n_extra_roundings=1)
        if how is not None:  # rand-k: zero outside the shared indices
            mask = torch.ones(out.numel(), dtype=torch.bool)
            mask[how] = False
            assert bool((out[mask] == 0).all())
    else:  # computed exactly as the hook does (float32, rank order): bitwise
        assert torch.equal(out, expected)


@pytest.mark.parametrize("name", list(world.HOOKS))
@pytest.mark.parametrize("n_ranks", WORLDS)
def test_hook_matches_single_process_simulation(records, n_ranks, name):
    state_cls, kw = world.HOOKS[name]
    recs = [records[n_ranks][r][name] for r in range(n_ranks)]
    shapes = _shapes()
    calls = [rec["calls"] for rec in recs]
    assert all(len(c) == len(calls[0]) for c in calls)
    for per_rank in zip(*calls):  # the ranks agree on the buckets, and all get the same result
        assert len({(c["step"], c["index"], tuple(c["params"])) for c in per_rank}) == 1
        for c in per_rank[1:]:
            assert torch.equal(c["output"], per_rank[0]["output"])
    layouts = {tuple(c["params"]) for c in calls[0]}
    assert len({c["step"] for c in calls[0]}) == world.STEPS
    assert len(layouts) > 1, "DDP should have rebuilt its buckets (the test needs the rebuild)"

    # the gradients the hooks were given are those of each rank's batch at the parameters SGD reaches
    model = world.make_model()
    params = list(model.parameters())
    for step in range(world.STEPS):
        step_calls = [c for c in calls[0] if c["step"] == step]
        for r in range(n_ranks):
            model.zero_grad()
            world.loss_of(model, *world.batch(step, r)).backward()
            grads = [p.grad for p in params]
            for c in (x for x in calls[r] if x["step"] == step):
                torch.testing.assert_close(c["input"], _flat(grads, c["params"]))
        with torch.no_grad():
            for c in step_calls:
                at = 0
                for i in c["params"]:
                    n = params[i].numel()
                    params[i].add_(c["output"][at:at + n].view_as(params[i]), alpha=-world.LR)
                    at += n
    for rec in recs:
        for p, final in zip(params, rec["final"]):
            torch.testing.assert_close(final, p.detach())

    # the hook's result, call by call, from all ranks' inputs
    steps = [list(per_rank) for per_rank in zip(*calls)]
    expected_bytes = [0] * world.STEPS
    for per_rank, (expected, how, nbytes) in zip(steps, SIMULATIONS[state_cls](steps, n_ranks, shapes, kw)):
        _check_output(per_rank[0]["output"], expected, how)
        expected_bytes[per_rank[0]["step"]] += nbytes

    dense = sum(math.prod(s) for s in shapes) * 4
    for rec in recs:
        assert rec["steps"] == world.STEPS
        assert rec["bytes_per_step"] == [(b, dense) for b in expected_bytes]
        assert rec["bytes_total"] == sum(expected_bytes)


# ---- state kept per parameter across bucket rebuilds (no process group needed) --------------------------

def test_residuals_follow_their_parameters_across_a_rebuild():
    from commkernels.distributed import Layout, Residuals

    a, b, c, d = (torch.nn.Parameter(torch.zeros(n)) for n in (3, 2, 4, 5))
    store = Residuals()
    first = Layout((id(a), id(b), id(c)), (a, b, c), (0, 3, 5), 9)
    store.get(first, a, torch.float32).copy_(torch.arange(9.0))
    second = Layout((id(c), id(a)), (c, a), (0, 4), 7)
    assert store.get(second, a, torch.float32).tolist() == [5, 6, 7, 8, 0, 1, 2]
    assert store.of_parameter(b).tolist() == [3, 4]  # b still lives in the first bucket
    third = Layout((id(b), id(d)), (b, d), (0, 2), 7)
    assert store.get(third, a, torch.float32).tolist() == [3, 4, 0, 0, 0, 0, 0]
    assert len(store._flat) == 2  # the first bucket, now empty of parameters, is gone
    assert store.get(second, a, torch.float32) is store.get(second, a, torch.float32)
    assert store.of_parameter(a).tolist() == [0, 1, 2]


# ---- argument checks (a world of one, in this process) -------------------------------------------------

@pytest.fixture
def single_rank_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=30))
    yield
    dist.destroy_process_group()


def test_states_need_a_process_group():
    import commkernels.distributed as ckd

    with pytest.raises(RuntimeError, match="init_process_group"):
        ckd.TopKState()


def test_states_check_their_arguments(single_rank_group):
    import commkernels.distributed as ckd

    with pytest.raises(ValueError, match="ratio"):
        ckd.TopKState(ratio=0.0)
    with pytest.raises(ValueError, match="index_codec"):
        ckd.TopKState(index_codec="zip")
    with pytest.raises(ValueError, match="ratio"):
        ckd.RandKState(ratio=1.5)
    with pytest.raises(TypeError, match="seed"):
        ckd.RandKState(seed=1.0)
    with pytest.raises(ValueError, match="seed"):
        ckd.RandKState(seed=-1)
    with pytest.raises(ValueError, match="scale"):
        ckd.SignState(scale="linf")
    with pytest.raises(ValueError, match="levels"):
        ckd.QsgdState(levels=0)
    with pytest.raises(ValueError, match="bucket_size"):
        ckd.QsgdState(bucket_size=0)
    with pytest.raises(ValueError, match="rank"):
        ckd.PowerSGDState(rank=0)
    with pytest.raises(ValueError, match="start_iter"):
        ckd.PowerSGDState(start_iter=-1)
    state = ckd.TopKState(ratio=0.5)
    assert (state.world_size, state.rank, state.steps, state.bytes_total) == (1, 0, 0, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64],
                         ids=["float32", "bfloat16", "float64"])
@pytest.mark.parametrize("name", list(world.HOOKS))
def test_hooks_register_directly_and_keep_a_lone_rank_exact(single_rank_group, name, dtype):
    """register_comm_hook accepts each hook as it is (DDP checks its annotations); in a world of one, the
    hooks that are exact there (top-k and rand-k at ratio 1, PowerSGD of full rank) give the gradient;
    16-bit and float64 gradients work (residuals in float32, float64 for float64; PowerSGD in the
    gradients' dtype)."""
    import commkernels.distributed as ckd
    from torch.nn.parallel import DistributedDataParallel as DDP

    state_cls, kw = world.HOOKS[name]
    exact = {"TopKState": dict(ratio=1.0), "RandKState": dict(ratio=1.0, seed=7)}.get(state_cls)
    if state_cls == "PowerSGDState":  # a fresh Gaussian Q each step: rank(A Q) = rank(A), so P P^T A = A
        # (a warm-started Q spans the previous step's row space, which need not hold this step's A when
        # A is rank-deficient, as ReLU layers' gradients often are: then full rank is not exact)
        exact = dict(rank=16, min_compression_rate=0.0, warm_start=False)
    model = world.make_model().to(dtype)
    reference = world.make_model().to(dtype)
    ddp = DDP(model, bucket_cap_mb=world.BUCKET_CAP_MB)
    state = getattr(ckd, state_cls)(**(exact if exact is not None else kw))
    ddp.register_comm_hook(state, getattr(ckd, world.HOOK_FUNCTIONS[state_cls]))
    for step in range(2):
        x, y = (t.to(dtype) for t in world.batch(step, 0))
        ddp.zero_grad()
        world.loss_of(ddp, x, y).backward()
        reference.zero_grad()
        world.loss_of(reference, x, y).backward()
        for p, q in zip(model.parameters(), reference.parameters()):
            assert p.grad is not None and p.grad.dtype == dtype and torch.isfinite(p.grad).all()
            if exact is None:
                continue
            if state_cls == "PowerSGDState":
                # P P^T A = A up to the Gram-Schmidt's rounding, which grows with the condition number of
                # A Q (with a warm-started Q it reached ~100 eps in float32 here): checked in float64,
                # where 1e-9 leaves room for condition numbers up to ~1e6
                if dtype == torch.float64:
                    err = float((p.grad - q.grad).norm() / q.grad.norm())
                    assert err < 1e-9, err
            else:  # the values themselves, sent and put back
                assert torch.equal(p.grad, q.grad)
    assert state.steps == 2 and state.bytes_total > 0


@pytest.mark.parametrize("name", ["topk", "randk", "powersgd"])
def test_hooks_with_gradients_as_bucket_views(single_rank_group, name):
    """With gradient_as_bucket_view=True the gradients are the bucket: the hooks' in-place results are
    what the parameters see (exact settings, as above)."""
    import commkernels.distributed as ckd
    from torch.nn.parallel import DistributedDataParallel as DDP

    state_cls, _ = world.HOOKS[name]
    kw = {"TopKState": {"ratio": 1.0}, "RandKState": {"ratio": 1.0},
          "PowerSGDState": {"rank": 16, "min_compression_rate": 0.0, "warm_start": False}}[state_cls]
    model, reference = world.make_model().double(), world.make_model().double()
    ddp = DDP(model, bucket_cap_mb=world.BUCKET_CAP_MB, gradient_as_bucket_view=True)
    state = getattr(ckd, state_cls)(**kw)
    ddp.register_comm_hook(state, getattr(ckd, world.HOOK_FUNCTIONS[state_cls]))
    for step in range(3):
        x, y = (t.double() for t in world.batch(step, 0))
        ddp.zero_grad()
        world.loss_of(ddp, x, y).backward()
        reference.zero_grad()
        world.loss_of(reference, x, y).backward()
        for p, q in zip(model.parameters(), reference.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-12)


def test_powersgd_with_nothing_worth_compressing_sends_the_mean(single_rank_group):
    import commkernels.distributed as ckd
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    model, reference = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    reference.load_state_dict(model.state_dict())
    ddp = DDP(model)
    state = ckd.PowerSGDState(rank=1)  # (2 + 3) * 1 * 2 >= 2 * 3: the weight is sent as it is
    ddp.register_comm_hook(state, ckd.powersgd_hook)
    x = torch.randn(4, 3)
    ddp(x).sum().backward()
    reference(x).sum().backward()
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p.grad, q.grad)
    assert state.bytes_last_step == 8 * 4 and not state.qs


# ---- a world that fails must fail the test, within a bound ----------------------------------------------

def test_a_rank_that_dies_fails_the_world_quickly(tmp_path):
    start = time.monotonic()
    with pytest.raises(world.WorldFailed, match="exit code 3"):
        world.run_world("die", 2, str(tmp_path), timeout=120)
    assert time.monotonic() - start < 120


def test_a_rank_that_hangs_is_killed_at_the_bound(tmp_path):
    start = time.monotonic()
    with pytest.raises(world.WorldFailed, match="did not finish within 10 s"):
        world.run_world("hang", 2, str(tmp_path), timeout=10, pg_timeout=600)
    assert time.monotonic() - start < 20


def test_bench_family_lists_a_case_per_hook_without_starting_a_world():
    from commkernels.bench import distributed as bench, registry

    assert "distributed" in registry.FAMILIES
    assert bench.cases("cuda", quick=True) == []
    cases = bench.cases("cpu", quick=True)
    assert [c.kernel for c in cases] == list(bench.OURS)
    assert bench._world is None  # nothing runs until a case is prepared
