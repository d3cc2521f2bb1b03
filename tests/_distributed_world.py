"""A world of ranks on localhost for the torch.distributed tests, with a hard bound on its run time.

``run_world(target, world, outdir, timeout)`` runs this file in a subprocess (its own session), which
spawns ``world`` ranks with torch.multiprocessing (gloo backend, a FileStore in ``outdir`` for the
rendezvous, so no port can clash) and runs ``TARGETS[target](rank, world, outdir)`` on each. A rank that
raises or dies makes torch's spawn stop the others and the subprocess exit non-zero; one that hangs runs
into the process group's timeout, and the subprocess as a whole is killed (its whole process group) at
``timeout``. Either way ``run_world`` raises ``WorldFailed`` with what happened and the tail of the
output, never hangs.

The targets save what the tests check (``torch.save`` in ``outdir``); the tests compute the same things
in one process and compare.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time

START_METHOD = os.environ.get("COMMKERNELS_TEST_START_METHOD", "fork")
PG_TIMEOUT_S = float(os.environ.get("COMMKERNELS_TEST_PG_TIMEOUT", "30"))


class WorldFailed(AssertionError):
    pass


def run_world(target: str, worlds, outdir: str, timeout: float, pg_timeout: float = PG_TIMEOUT_S) -> float:
    """Runs the world (or one world after the other for a list of sizes, in one subprocess, each in
    ``outdir/w<size>``); returns the wall time in seconds, or raises WorldFailed."""
    worlds = [worlds] if isinstance(worlds, int) else list(worlds)
    world = ",".join(map(str, worlds))
    env = dict(os.environ, OMP_NUM_THREADS="1", COMMKERNELS_TEST_PG_TIMEOUT=str(pg_timeout))
    cmd = [sys.executable, os.path.abspath(__file__), target, world, str(outdir)]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the spawned ranks too
        out, _ = proc.communicate()
        raise WorldFailed(f"world of {world} ranks running {target!r} did not finish within {timeout:.0f} s "
                          f"(killed); output tail:\n{out[-3000:]}") from None
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise WorldFailed(f"world of {world} ranks running {target!r} failed (exit code {proc.returncode}) "
                          f"after {elapsed:.1f} s; output tail:\n{out[-3000:]}")
    return elapsed


_shared: dict = {}


def shared_run(tmp_path_factory, worlds=(2, 4), timeout: float = 240) -> str:
    """The directory of one run of every recording target (hooks, collectives) in worlds of 2 and 4
    ranks, made once per test session and shared by the test files (``w<n>/<target>-rank<r>.pt``)."""
    if "dir" not in _shared:
        outdir = str(tmp_path_factory.mktemp("distributed"))
        try:
            run_world("hooks+collectives", worlds, outdir, timeout=timeout)
        except WorldFailed as error:
            _shared["error"] = error
        _shared["dir"] = outdir
    if "error" in _shared:
        raise _shared["error"]
    return _shared["dir"]


# ---- the ranks ----------------------------------------------------------------------------------------

def _init(rank: int, world: int, outdir: str) -> None:
    import torch.distributed as dist

    if dist.is_initialized():  # an earlier target of the same run
        return
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(outdir, 'store')}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=PG_TIMEOUT_S))


# The model and data every hook test trains; the tests rebuild them in one process.
IN, HIDDEN1, HIDDEN2, OUT, BATCH, STEPS, LR = 16, 12, 8, 3, 8, 3, 0.1
BUCKET_CAP_MB = 0.0006  # ~150 float32 per bucket: several buckets, rebuilt after the first step


def make_model():
    import torch

    torch.manual_seed(1234)
    return torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN1), torch.nn.ReLU(), torch.nn.Linear(HIDDEN1, HIDDEN2),
                               torch.nn.ReLU(), torch.nn.Linear(HIDDEN2, OUT))


def batch(step: int, rank: int):
    import torch

    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(BATCH, IN, generator=g), torch.randn(BATCH, OUT, generator=g)


def loss_of(model, x, y):
    return ((model(x) - y) ** 2).mean()


# name -> (state class name, keyword arguments): the hook configurations the tests check
HOOKS = {
    "topk": ("TopKState", dict(ratio=0.1)),
    "topk_packed": ("TopKState", dict(ratio=0.1, index_codec="auto")),
    "randk": ("RandKState", dict(ratio=0.25, seed=7)),
    "randk_unbiased": ("RandKState", dict(ratio=0.25, seed=7, error_feedback=False)),
    "sign": ("SignState", dict(scale="l1")),
    "qsgd": ("QsgdState", dict(levels=7, bucket_size=32, seed=5, error_feedback=True)),
    "powersgd": ("PowerSGDState", dict(rank=2, seed=3)),
}
HOOK_FUNCTIONS = {"TopKState": "topk_hook", "RandKState": "randk_hook", "SignState": "sign_hook",
                  "QsgdState": "qsgd_hook", "PowerSGDState": "powersgd_hook"}


def _train_with_hook(rank: int, world: int, name: str) -> dict:
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    import commkernels.distributed as ckd

    state_cls, kwargs = HOOKS[name]
    model = make_model()
    params = list(model.parameters())
    position = {id(p): i for i, p in enumerate(params)}
    init = [p.detach().clone() for p in params]
    ddp = DDP(model, bucket_cap_mb=BUCKET_CAP_MB)
    state = getattr(ckd, state_cls)(**kwargs)
    hook = getattr(ckd, HOOK_FUNCTIONS[state_cls])
    calls = []

    def recording_hook(state, bucket):
        call = {"step": state.steps, "index": bucket.index(),
                "params": [position[id(p)] for p in bucket.parameters()], "input": bucket.buffer().clone()}
        calls.append(call)

        def record(fut):
            call["output"] = fut.value().clone()
            return fut.value()

        return hook(state, bucket).then(record)

    ddp.register_comm_hook(state, recording_hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=LR)
    bytes_per_step = []
    for step in range(STEPS):
        opt.zero_grad()
        x, y = batch(step, rank)
        loss_of(ddp, x, y).backward()
        opt.step()
        bytes_per_step.append((state.bytes_last_step, state.dense_bytes_last_step))
    return {"init": init, "final": [p.detach().clone() for p in params], "calls": calls,
            "bytes_per_step": bytes_per_step, "bytes_total": state.bytes_total, "steps": state.steps}


def target_hooks(rank: int, world: int, outdir: str) -> None:
    import torch

    _init(rank, world, outdir)
    torch.save({name: _train_with_hook(rank, world, name) for name in HOOKS},
               os.path.join(outdir, f"hooks-rank{rank}.pt"))


def target_die(rank: int, world: int, outdir: str) -> None:
    import torch.distributed as dist

    _init(rank, world, outdir)
    if rank == world - 1:
        os._exit(3)
    dist.barrier()


def target_hang(rank: int, world: int, outdir: str) -> None:
    import torch
    import torch.distributed as dist

    _init(rank, world, outdir)
    if rank == world - 1:
        time.sleep(3600)
    dist.all_reduce(torch.ones(4))


# ---- the collectives ------------------------------------------------------------------------------------

D = 37  # elements per rank's tensor
TOKENS, HIDDEN_MOE = 11, 5


def rank_tensor(rank: int, step: int = 0):
    import torch

    return torch.randn(D, generator=torch.Generator().manual_seed(5000 + 17 * rank + step))


def trimmed_mean_rule(X, f):
    """A callable rule for robust_all_reduce: the coordinate-wise mean of the n - 2f middle values."""
    n = X.shape[0]
    return X.sort(0).values[f:n - f].mean(0)


def static_mixing(n: int):
    """A static, non-symmetric mixing matrix (rows sum to 1) with a few neighbours per rank."""
    import numpy as np

    W = np.zeros((n, n))
    for i in range(n):
        W[i, i] += 0.5
        W[i, (i + 1) % n] += 0.3
        W[i, (i - 1) % n] += 0.2
    return W


def push_sum_matrix(n: int):
    """Column-stochastic and not row-stochastic: rank 0 keeps 1/4 and pushes 3/4 to rank 1, the others
    keep 1/2 and push 1/2 to their successor."""
    import numpy as np

    P = np.zeros((n, n))
    P[0, 0], P[1, 0] = 0.25, 0.75
    for j in range(1, n):
        P[j, j] += 0.5
        P[(j + 1) % n, j] += 0.5
    return P


def expert_assignment(rank: int, num_experts: int):
    """Each token's expert on this rank (seeded), and the tokens."""
    import torch

    g = torch.Generator().manual_seed(9000 + rank)
    return torch.randint(0, num_experts, (TOKENS,), generator=g), torch.randn(TOKENS, HIDDEN_MOE, generator=g)


def target_collectives(rank: int, world: int, outdir: str) -> None:
    import math
    import types

    import torch

    import commkernels.distributed as ckd

    _init(rank, world, outdir)
    out = {}
    x = rank_tensor(rank)
    out["robust_callable"] = ckd.robust_all_reduce(x, trimmed_mean_rule, f=(world - 1) // 2)
    try:
        out["robust_median"] = ckd.robust_all_reduce(x, "median", f=(world - 1) // 2)
        out["robust_trimmed_mean"] = ckd.robust_all_reduce(x, "trimmed_mean", f=(world - 1) // 2)
    except ValueError as error:
        out["robust_named_error"] = str(error)
    out["gossip_static"] = ckd.gossip(x, static_mixing(world))
    y = x
    tau = math.ceil(math.log2(world))
    for step in range(tau):
        y = ckd.gossip(y, "one_peer_exponential", step)
    out["gossip_one_peer"] = y
    out["gossip_time_varying"] = ckd.gossip(x, lambda step: static_mixing(world) if step % 2 else torch.eye(world),
                                            step=1)
    # a shift (no self weight) with rank 0 holding inf: rank 0 must get rank 1's x exactly, not NaN
    shift = torch.roll(torch.eye(world, dtype=torch.float64), 1, dims=1)  # W[i, i + 1] = 1
    out["gossip_shift_from_inf"] = ckd.gossip(torch.full_like(x, math.inf) if rank == 0 else x, shift)
    xs, w = x, torch.ones(1)
    for step in range(3):
        xs, w = ckd.push_sum(xs, w, push_sum_matrix(world), step)
    out["push_sum"] = (xs, w)

    num_experts = 2 * world
    experts, tokens = expert_assignment(rank, num_experts)
    order = torch.sort(experts, stable=True).indices
    rows = tokens[order]
    counts = torch.bincount(experts, minlength=num_experts)
    plan = types.SimpleNamespace(offsets=torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]))
    d = ckd.dispatch(rows, plan)
    local = num_experts // world
    # the local experts: expert e multiplies by e + 1
    outputs, at = [], 0
    for src in range(world):
        for e in range(local):
            c = int(d.counts[src, e])
            outputs.append(d.rows[at:at + c] * float(rank * local + e + 1))
            at += c
    y = torch.cat(outputs) if outputs else d.rows.clone()
    out["dispatch_rows"], out["dispatch_counts"] = d.rows, d.counts
    out["combined"] = ckd.combine(y, d)
    d2 = ckd.dispatch(rows, counts.numpy())  # the plan as bare per-expert counts; identity experts
    out["roundtrip"] = ckd.combine(d2.rows, d2)
    padded = torch.cat([rows, torch.zeros(2, HIDDEN_MOE)])  # a Plan's trailing padding rows stay home
    d3 = ckd.dispatch(padded, plan)
    out["padded_roundtrip"] = ckd.combine(d3.rows * 1.0, d3)
    out.update(_with_other_families(rank, world, x))
    torch.save(out, os.path.join(outdir, f"collectives-rank{rank}.pt"))


TOP_K = 2


def routing(rank: int, num_experts: int):
    """Each token's top-2 distinct experts and their weights on this rank (seeded), and the tokens."""
    import torch

    g = torch.Generator().manual_seed(7000 + rank)
    ids = torch.stack([torch.randperm(num_experts, generator=g)[:TOP_K] for _ in range(TOKENS)])
    weights = torch.rand(TOKENS, TOP_K, generator=g)
    return ids, weights, torch.randn(TOKENS, HIDDEN_MOE, generator=g)


def experts_apply(rows, plan_offsets):
    """The MoE layer's experts in one process: expert e multiplies its rows by e + 1."""
    out = rows.clone()
    for e in range(len(plan_offsets) - 1):
        out[int(plan_offsets[e]):int(plan_offsets[e + 1])] *= float(e + 1)
    return out


def _with_other_families(rank: int, world: int, x) -> dict:
    """What needs commkernels.graph / commkernels.moe, when they are installed."""
    import importlib.util

    import commkernels.distributed as ckd

    out = {}
    if importlib.util.find_spec("commkernels.graph") is not None:
        from commkernels.graph import Graph

        out["gossip_graph"] = ckd.gossip(x, Graph.from_dense(static_mixing(world)))
    if importlib.util.find_spec("commkernels.moe") is not None:
        import torch

        from commkernels import moe

        num_experts = 2 * world
        local = num_experts // world
        ids, weights, tokens = routing(rank, num_experts)
        for align in (1, 4):
            p = moe.plan(ids, num_experts, align=align)
            d = ckd.dispatch(moe.permute(tokens, p), p)
            parts, at = [], 0
            for src in range(world):
                for e in range(local):
                    c = int(d.counts[src, e])
                    parts.append(d.rows[at:at + c] * float(rank * local + e + 1))
                    at += c
            back = ckd.combine(torch.cat(parts), d)
            out[f"moe_layer_align{align}"] = moe.combine(back.contiguous(), p, weights)
    return out


TARGETS = {"hooks": target_hooks, "collectives": target_collectives, "die": target_die, "hang": target_hang}


def _rank_main(rank: int, target: str, world: int, outdir: str) -> None:
    for name in target.split("+"):  # "a+b": the targets one after the other, in one process group
        TARGETS[name](rank, world, outdir)
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    import torch.multiprocessing as mp

    import torch  # noqa: F401  (imported once here, inherited by the forked ranks)
    import torch._dynamo  # noqa: F401  (torch.compiler.is_compiling, which the ops call, imports it: ~4 s)
    import torch.distributed  # noqa: F401
    import torch.nn.parallel  # noqa: F401

    import commkernels.distributed  # noqa: F401

    target, worlds, outdir = sys.argv[1], [int(w) for w in sys.argv[2].split(",")], sys.argv[3]
    for world in worlds:
        world_dir = os.path.join(outdir, f"w{world}")
        os.makedirs(world_dir, exist_ok=True)
        # fork: this process has imported torch but run nothing (no thread pools yet), so forking is safe
        # and spares each rank its own import of torch (seconds on a loaded machine)
        mp.start_processes(_rank_main, args=(target, world, world_dir), nprocs=world, join=True,
                           start_method=START_METHOD)
