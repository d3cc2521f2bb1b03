"""The demo's command line: arguments, the two modes (one process / torch.distributed), the printed
tables, the progress bar and the plot."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time

INSTALL_HINT = ("the demo needs scikit-learn (the digits dataset) and matplotlib (the plot): "
                "pip install 'commkernels[demo]'  (or: pip install scikit-learn matplotlib)")

CONFIG_KEYS = ("ref", "mean", "robust", "mean-topk", "robust-topk")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ._choices import ATTACKS, GRAPHS, RULES

    p.add_argument("--simulate", action="store_true", help="all agents in this process (graph.mix as transport)")
    p.add_argument("--backend", default="gloo", choices=["gloo"], help="torch.distributed backend (default gloo)")
    p.add_argument("--agents", type=int, default=10, help="agents (processes without --simulate); default 10")
    p.add_argument("--byzantine", type=int, default=2, help="Byzantine agents f (default 2)")
    p.add_argument("--attack", default="sign_flip", choices=[a for a in ATTACKS if a != "none"])
    p.add_argument("--rule", default="trimmed_mean", choices=[r for r in RULES if r != "mean"],
                   help="the robust rule compared with the mean (default trimmed_mean)")
    p.add_argument("--graph", default="circulant2", choices=GRAPHS, help="circulant topology (default circulant2)")
    p.add_argument("--rounds", type=int, default=25)
    p.add_argument("--local-steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.3)
    p.add_argument("--gamma", type=float, default=1.0, help="consensus step size (default 1)")
    p.add_argument("--ratio", type=float, default=0.1, help="fraction of the parameters a compressed message "
                   "carries (top-k with error feedback); default 0.1")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--top-experts", type=int, default=2, help="experts per token (default 2)")
    p.add_argument("--configs", default=",".join(CONFIG_KEYS),
                   help=f"comma-separated subset of {','.join(CONFIG_KEYS)} (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default="demo.png", help="PNG path for the plot (default demo.png; '' for none)")
    p.add_argument("--json", default=None, help="save the results (accuracy, bytes, model digests) as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m commkernels demo", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def _check_dependencies(args) -> str | None:
    missing = []
    try:
        import sklearn  # noqa: F401
    except ImportError:
        missing.append("scikit-learn")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            missing.append("matplotlib")
    try:
        import torch  # noqa: F401
    except ImportError:
        missing.append("torch")
    if missing:
        return f"error: missing {', '.join(missing)}: {INSTALL_HINT}; torch: pip install torch"
    return None


def _configs(args):
    from ._protocol import Config

    top = f"top-{args.ratio:g}"
    table = {
        "ref": Config("mean, no attack, dense", "mean", "none", 1.0),
        "mean": Config(f"mean, {args.attack}, dense", "mean", args.attack, 1.0),
        "robust": Config(f"{args.rule}, {args.attack}, dense", args.rule, args.attack, 1.0),
        "mean-topk": Config(f"mean, {args.attack}, {top}", "mean", args.attack, args.ratio),
        "robust-topk": Config(f"{args.rule}, {args.attack}, {top}", args.rule, args.attack, args.ratio),
    }
    keys = [k.strip() for k in args.configs.split(",") if k.strip()]
    for k in keys:
        if k not in table:
            raise SystemExit(f"error: --configs: unknown {k!r} (known: {', '.join(CONFIG_KEYS)})")
    return keys, [table[k] for k in keys]


def _validate(args) -> None:
    if args.agents < 1:
        raise SystemExit("error: --agents: expected >= 1")
    if not 0 <= args.byzantine < args.agents:
        raise SystemExit(f"error: --byzantine: expected 0 <= f < agents = {args.agents}, got {args.byzantine}")
    if not 0 < args.ratio <= 1:
        raise SystemExit("error: --ratio: expected 0 < ratio <= 1")
    if not 0 < args.gamma <= 1:
        raise SystemExit("error: --gamma: expected 0 < gamma <= 1")
    for name in ("rounds", "local_steps", "batch", "hidden", "experts", "top_experts"):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')}: expected >= 1")
    if args.top_experts > args.experts:
        raise SystemExit("error: --top-experts: expected <= --experts")


def run(args) -> int:
    torchrun = all(v in os.environ for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))
    if torchrun and not args.simulate:
        args.agents = int(os.environ["WORLD_SIZE"])
    _validate(args)  # bad arguments first: they are wrong whatever is installed
    _configs(args)
    problem = _check_dependencies(args)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if args.simulate:
        return _agent_main(args, None, args.agents, None)
    if torchrun:
        return _agent_main(args, int(os.environ["RANK"]), args.agents, "env://")
    import torch.multiprocessing as mp

    _preload()
    with tempfile.TemporaryDirectory(prefix="commkernels-demo-") as tmp:
        init = f"file://{os.path.join(tmp, 'store')}"
        try:
            mp.start_processes(_spawned, args=(args, args.agents, init), nprocs=args.agents, join=True,
                               start_method="fork")
        except mp.ProcessRaisedException as error:
            print(f"error: an agent process failed:\n{error}", file=sys.stderr)
            return 1
        except mp.ProcessExitedException as error:
            print(f"error: an agent process died: {error}", file=sys.stderr)
            return 1
    return 0


def _preload() -> None:
    """Imports what every agent needs once, here, before the fork: torch.compiler.is_compiling (called by
    the custom ops) imports torch._dynamo, seconds per process on a loaded machine. Nothing has run yet
    (no thread pools), so forking afterwards is safe."""
    import sklearn.datasets  # noqa: F401
    import torch._dynamo  # noqa: F401
    import torch.distributed  # noqa: F401

    from .. import distributed  # noqa: F401
    from . import _model, _protocol  # noqa: F401


def _spawned(rank: int, args, world: int, init: str) -> None:
    code = _agent_main(args, rank, world, init)
    if code:
        raise SystemExit(code)


def _load_data(n: int, byzantine: list, seed: int):
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = torch.from_numpy(digits.data.astype(np.float32) / 16.0)
    y = torch.from_numpy(digits.target.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    n_test = len(y) // 5
    test, train = order[:n_test], order[n_test:]
    holders = [i for i in range(n) if i not in byzantine]
    shards = [None] * n
    for j, i in enumerate(holders):
        idx = train[j::len(holders)]
        shards[i] = (X[idx].contiguous(), y[idx].contiguous())
    return shards, X[test].contiguous(), y[test].contiguous(), len(train)


class Progress:
    """A plain-text progress bar on stderr (carriage returns; a newline when a configuration ends)."""

    def __init__(self, enabled: bool, total: int, label: str):
        self.enabled, self.total, self.label, self.start = enabled, total, label, time.monotonic()

    def __call__(self, done: int, acc: float) -> None:
        if not self.enabled:
            return
        width = 24
        fill = int(width * done / self.total)
        line = (f"\r{self.label:<46} |{'#' * fill}{'.' * (width - fill)}| {done:3d}/{self.total} "
                f"acc {acc:.3f}  {time.monotonic() - self.start:5.1f}s")
        sys.stderr.write(line + ("\n" if done == self.total else ""))
        sys.stderr.flush()


def _agent_main(args, rank, world: int, init) -> int:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic in every mode; the models are small
    distributed = rank is not None
    if distributed:
        import torch.distributed as dist

        kwargs = {} if init == "env://" else {"rank": rank, "world_size": world}
        dist.init_process_group(args.backend, init_method=init, timeout=datetime.timedelta(seconds=120),
                                **kwargs)
    try:
        return _train_and_report(args, rank, world)
    finally:
        torch.set_num_threads(threads)  # a caller in this process (--simulate) keeps its setting
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train_and_report(args, rank, world: int) -> int:
    from .. import graph as ckgraph
    from . import _model, _protocol

    n = world
    offsets = _protocol.shifts(args.graph, n)
    byzantine = _protocol.byzantine_agents(n, args.byzantine)
    shapes = _model.Shapes(features=64, classes=10, hidden=args.hidden, ffn=args.hidden, experts=args.experts,
                           k=args.top_experts)
    shards, X_test, y_test, n_train = _load_data(n, byzantine, args.seed)
    setup = _protocol.Setup(n=n, byzantine=byzantine, offsets=offsets, shapes=shapes, shards=shards, X_test=X_test,
                            y_test=y_test, theta0=_model.init(shapes, args.seed), rounds=args.rounds,
                            local_steps=args.local_steps, batch=args.batch, lr=args.lr, gamma=args.gamma,
                            f_rule=_protocol.rule_f(n, offsets, byzantine), seed=args.seed)
    if rank is None:
        transport, owned = _protocol.SimulatedTransport(n, offsets), list(range(n))
    else:
        transport, owned = _protocol.DistributedTransport(n, offsets, rank), [rank]
    lead = rank in (None, 0)
    keys, configs = _configs(args)
    W = ckgraph.metropolis_hastings(_protocol.neighbourhood_graph(n, offsets))
    mode = "simulate (one process, graph.mix)" if rank is None else f"torch.distributed {args.backend}, {n} ranks"
    if lead:
        print(f"commkernels demo: {n} agents, {len(byzantine)} Byzantine {byzantine} ({args.attack}), graph "
              f"{args.graph} ({len(offsets)} neighbours each, spectral gap {ckgraph.spectral_gap(W):.3f}), "
              f"rule f = {setup.f_rule}")
        print(f"  digits: {n_train} train samples in {n - len(byzantine)} shards, {len(y_test)} test; MoE "
              f"classifier d = {shapes.size} parameters ({shapes.experts} experts, top-{shapes.k}); {args.rounds} "
              f"rounds x {args.local_steps} local SGD steps; mode {mode}", flush=True)
    results = []
    for c, cfg in enumerate(configs):
        bar = Progress(lead and not args.no_progress, args.rounds, f"[{c + 1}/{len(configs)}] {cfg.name}")
        start = time.monotonic()
        res = _protocol.run_config(cfg, setup, transport, owned, bar)
        res["seconds"] = time.monotonic() - start
        res["key"] = keys[c]
        if rank is not None:
            import torch.distributed as dist

            gathered = [None] * n
            dist.all_gather_object(gathered, res["digests"])
            res["digests"] = {i: dgst for part in gathered for i, dgst in part.items()}
        res["digests"] = {str(i): res["digests"][i] for i in sorted(res["digests"])}
        results.append(res)
    if not lead:
        return 0
    _print_tables(results, args.rounds)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"agents": n, "byzantine": byzantine, "graph": args.graph, "mode": mode, "d": shapes.size,
                       "configs": results}, fh, indent=1)
    if args.plot:
        _plot(results, args.plot, f"{n} agents, {len(byzantine)} Byzantine ({args.attack}), {args.graph}")
        print(f"plot saved to {args.plot}")
    return 0


def _print_tables(results: list, rounds: int) -> None:
    print("\ntest accuracy (mean over the honest agents) per round:")
    print("round " + " ".join(f"{r['key']:>11}" for r in results))
    for t in range(rounds):
        print(f"{t + 1:5d} " + " ".join(f"{r['accuracy'][t]:11.3f}" for r in results))
    print(f"\n{'configuration':<46} {'final acc':>9} {'MB sent':>9} {'MB/round':>9} {'time':>7}")
    for r in results:
        total = sum(r["bytes"])
        print(f"{r['key'] + ': ' + r['name']:<46} {r['accuracy'][-1]:9.3f} {total / 1e6:9.2f} "
              f"{total / 1e6 / rounds:9.3f} {r['seconds']:6.1f}s")


def _plot(results: list, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in results:
        rounds = range(1, len(r["accuracy"]) + 1)
        mb, total = [], 0
        for x in r["bytes"]:
            total += x
            mb.append(total / 1e6)
        style = "--" if r["ratio"] < 1 else "-"
        a.plot(rounds, r["accuracy"], style, label=r["name"])
        b.plot(mb, r["accuracy"], style, label=r["name"])
    a.set_xlabel("round")
    b.set_xlabel("MB sent (all agents)")
    b.set_xscale("log")
    for ax in (a, b):
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    a.legend(fontsize=8)
    fig.suptitle(f"commkernels demo: {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
