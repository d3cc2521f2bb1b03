"""distributed cases: a DDP training step with each of our communication hooks against DDP's own.

The model is a 2-layer MLP (1024 -> 1024 -> ReLU -> 1024, 2.1 M float32 parameters, 8.4 MB of gradients)
trained with SGD on a fixed batch of 32 per rank, under DistributedDataParallel with world size 2 on the
gloo backend. The two ranks are processes started once (``spawn``) for the whole run and driven through
pipes: timing one call = the parent sends "step" to both ranks and waits for both to answer, so a sample
is the slower rank's forward + backward (with its hook's communication) + optimizer step, plus a pipe
round trip (~0.1 ms). Each rank uses one thread (torch and commkernels): two ranks on a 2-core machine.

Per case (one of our hooks) the baselines are DDP's built-in all-reduce (no hook), torch's
``fp16_compress_hook`` and torch's ``powerSGD_hook`` at the same rank as ours (rank 4). Every contender is
its own DDP model (same initial weights, same data), stepped 3 times before timing (DDP rebuilds its
buckets after the first step; torch's PowerSGD sends uncompressed until ``start_powerSGD_iter`` = 2).

Every contender runs with ``bucket_cap_mb=32``: the gradients in one bucket. With DDP's default buckets
(two of 4.2 MB here after the rebuild) torch's ``powerSGD_hook`` dies on gloo with "Received data size
doesn't match expected size ... collective mismatch": it launches its second and third all-reduces from
Future callbacks, which on each rank run when that rank's previous all-reduce completes, so one rank can
issue bucket 0's Q all-reduce before bucket 1's P all-reduce and the other the reverse. Our hooks issue
every collective from the hook call itself (the autograd thread, in bucket order on every rank), so they
work with any bucketing; one bucket for all keeps the comparison even.

The columns say what each contender hands to its collectives per step and rank (``sent/step``: ours;
``baseline sent/step``); ``floor`` is ours, so the GB/s column is ours payload bytes / step time (not a
memory bandwidth: the probe fraction means nothing here).
"""

from __future__ import annotations

import atexit
import datetime
import os
import tempfile
import traceback

import torch

from .harness import Case, Prepared

FAMILY = "distributed"
WORLD_SIZE = 2
WIDTH = 1024
BATCH = 32
WARMUP_STEPS = 3
REPLY_TIMEOUT_S = 120.0
POWERSGD_RANK = 4
BUCKET_CAP_MB = 32  # the whole model in one bucket, for every contender (see the module docstring)

# name -> (commkernels.distributed state class, hook, keyword arguments, the table's parameter text)
OURS = {
    "topk_hook": ("TopKState", "topk_hook", dict(ratio=0.01), "k/d=1%, EF"),
    "topk_hook[packed]": ("TopKState", "topk_hook", dict(ratio=0.01, index_codec="auto"),
                          "k/d=1%, EF, pack(auto)"),
    "randk_hook": ("RandKState", "randk_hook", dict(ratio=0.01, seed=1), "k/d=1%, EF, shared seed"),
    "sign_hook": ("SignState", "sign_hook", dict(scale="l1"), "1 bit, worker+server EF"),
    "qsgd_hook": ("QsgdState", "qsgd_hook", dict(levels=15, bucket_size=512, seed=1), "s=15 (5 bits), bucket 512"),
    "powersgd_hook": ("PowerSGDState", "powersgd_hook", dict(rank=POWERSGD_RANK),
                      f"rank {POWERSGD_RANK}, EF, warm start"),
}
BASELINES = ("DDP allreduce", "torch fp16_compress_hook", f"torch powerSGD_hook r={POWERSGD_RANK}")
SHORT = dict(zip(BASELINES, ("allreduce", "fp16", "torch PowerSGD")))


# ---- a rank ----------------------------------------------------------------------------------------------

def _contender(name: str):
    """(DDP model, optimizer, bytes of the last step) for one contender, built on first use (DDP's constructor
    is a collective: both ranks build in the same order, because they follow the same commands)."""
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
    from torch.nn.parallel import DistributedDataParallel as DDP

    import commkernels.distributed as ckd

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU(), torch.nn.Linear(WIDTH, WIDTH))
    numel = sum(p.numel() for p in model.parameters())
    ddp = DDP(model, bucket_cap_mb=BUCKET_CAP_MB)
    opt = torch.optim.SGD(ddp.parameters(), lr=1e-3)
    if name == BASELINES[0]:
        return ddp, opt, lambda: numel * 4
    if name == BASELINES[1]:
        ddp.register_comm_hook(dist.group.WORLD, default_hooks.fp16_compress_hook)
        return ddp, opt, lambda: numel * 2
    if name == BASELINES[2]:
        state = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=POWERSGD_RANK,
                                            start_powerSGD_iter=2, use_error_feedback=True, warm_start=True)
        ddp.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
        seen = [0]

        def sent() -> int:  # torch counts elements after compression, cumulatively
            now = state.total_numel_after_compression
            step, seen[0] = now - seen[0], now
            return step * 4 if step else numel * 4  # nothing counted: a plain all-reduce step

        return ddp, opt, sent
    state_cls, hook, kwargs, _ = OURS[name]
    state = getattr(ckd, state_cls)(**kwargs)
    ddp.register_comm_hook(state, getattr(ckd, hook))
    return ddp, opt, lambda: state.bytes_last_step


def _rank_main(rank: int, store: str, conn) -> None:
    try:
        import torch.distributed as dist

        import commkernels

        torch.set_num_threads(1)
        commkernels.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD_SIZE,
                                timeout=datetime.timedelta(seconds=REPLY_TIMEOUT_S))
        g = torch.Generator().manual_seed(100 + rank)
        x, y = torch.randn(BATCH, WIDTH, generator=g), torch.randn(BATCH, WIDTH, generator=g)
        contenders = {}
        conn.send(("ready", None))
        while True:
            command, name = conn.recv()
            if command == "stop":
                break
            if name not in contenders:
                contenders[name] = _contender(name)
            ddp, opt, sent = contenders[name]
            opt.zero_grad(set_to_none=False)
            ((ddp(x) - y) ** 2).mean().backward()
            opt.step()
            conn.send(("ok", sent()))
        dist.destroy_process_group()
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        raise


# ---- the parent: the world, started once -------------------------------------------------------------------

class _World:
    def __init__(self) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # this process has thread pools: no fork
        self._dir = tempfile.TemporaryDirectory(prefix="commkernels-bench-")
        store = os.path.join(self._dir.name, "store")
        self._conns, self._procs = [], []
        for rank in range(WORLD_SIZE):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_rank_main, args=(rank, store, child), daemon=True)
            proc.start()
            self._conns.append(parent)
            self._procs.append(proc)
        self._replies("start")

    def _replies(self, what: str) -> list:
        out = []
        for rank, conn in enumerate(self._conns):
            if not conn.poll(REPLY_TIMEOUT_S):
                self.close()
                raise RuntimeError(f"distributed bench: rank {rank} did not answer ({what}) within {REPLY_TIMEOUT_S} s")
            status, value = conn.recv()
            if status == "error":
                self.close()
                raise RuntimeError(f"distributed bench: rank {rank} failed ({what}):\n{value}")
            out.append(value)
        return out

    def step(self, name: str) -> int:
        for conn in self._conns:
            conn.send(("step", name))
        return max(self._replies(name))

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(("stop", None))
            except (OSError, ValueError):
                pass
        for proc in self._procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        self._conns, self._procs = [], []
        self._dir.cleanup()


_world: _World | None = None


def _get_world() -> _World:
    global _world
    if _world is None:
        _world = _World()
        atexit.register(_world.close)
    return _world


def _bytes(n: int) -> str:
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def _case(name: str) -> Case:
    numel = 2 * WIDTH * WIDTH + 2 * WIDTH
    columns = {"model": f"MLP {numel / 1e6:.2f}M", "world": f"{WORLD_SIZE} gloo", "hook": OURS[name][3]}
    params = {"d": numel, "world_size": WORLD_SIZE, "batch": BATCH}
    case = Case(family=FAMILY, kernel=name, ours=f"commkernels.distributed.{OURS[name][1]}", columns=columns,
                params=params, floor_bytes=1, prepare=lambda: None)

    def prepare() -> Prepared:
        world = _get_world()
        sent = {}
        for contender in (name, *BASELINES):  # untimed: DDP's bucket rebuild, torch PowerSGD's warm-up
            for _ in range(WARMUP_STEPS):
                sent[contender] = world.step(contender)
        # what each sends per step, known only now: the table's columns and the JSON's params
        columns["sent/step"] = _bytes(sent[name])
        columns["baseline sent/step"] = ", ".join(f"{SHORT[b]} {_bytes(sent[b])}" for b in BASELINES)
        params["bytes_per_step"] = sent
        case.floor_bytes = sent[name]
        return Prepared(ours=lambda: world.step(name),
                        baselines={b: (lambda b=b: world.step(b)) for b in BASELINES})

    case.prepare = prepare
    return case


def cases(device: str, quick: bool, sizes=None) -> list[Case]:
    """One case per hook of ours (CPU only: the ranks run gloo on CPU tensors; ``sizes`` is ignored)."""
    if device != "cpu":
        return []
    return [_case(name) for name in OURS]
