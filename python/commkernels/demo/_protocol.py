"""One training run of the demo: the agents' round (local SGD, compressed message, exchange, robust
aggregation), over a transport that is either graph.mix on all agents' messages in one process or
distributed.gossip between processes. The module docstring of ``commkernels.demo`` states the algorithm.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import aggregate, attacks, compress
from .. import graph as ckgraph
from . import _model
from ._choices import ATTACKS, GRAPHS, RULES


# ---- the communication graph -------------------------------------------------------------------------

def shifts(kind: str, n: int) -> list[int]:
    """The circulant graph's offsets: agent i receives from i - s (mod n) for each s (symmetric sets)."""
    if kind == "ring":
        base = [1]
    elif kind == "circulant2":
        base = [1, 2]
    elif kind == "exponential":
        base = [1 << j for j in range(max(n - 1, 1).bit_length()) if (1 << j) < n]
    elif kind == "complete":
        base = list(range(1, n))
    else:
        raise ValueError(f"graph: expected one of {', '.join(GRAPHS)}, got {kind!r}")
    return sorted({s % n for b in base for s in (b, -b)} - {0})


def shift_graph(n: int, s: int) -> ckgraph.Graph:
    """The permutation y_i = x_{i - s}: one edge i - s -> i of weight 1 per agent (no zero entries, so
    mixing copies the messages bit for bit)."""
    i = np.arange(n)
    return ckgraph.Graph(np.stack([(i - s) % n, i]), n, np.ones(n))


def neighbourhood_graph(n: int, offsets: list[int]) -> ckgraph.Graph:
    i = np.arange(n)
    src = np.concatenate([(i - s) % n for s in offsets]) if offsets else np.zeros(0, np.int64)
    dst = np.concatenate([i for _ in offsets]) if offsets else np.zeros(0, np.int64)
    return ckgraph.Graph(np.stack([src, dst]), n)


def byzantine_agents(n: int, f: int) -> list[int]:
    """f agents spread evenly around the circle (so that no neighbourhood holds more of them than needed)."""
    return sorted({(j * n) // f for j in range(f)}) if f else []


def rule_f(n: int, offsets: list[int], byzantine: list[int]) -> int:
    """The most Byzantine neighbours any honest agent has: the f its rule must tolerate."""
    bad = set(byzantine)
    return max([sum(((i - s) % n) in bad for s in offsets) for i in range(n) if i not in bad] or [0])


# ---- transports --------------------------------------------------------------------------------------

class SimulatedTransport:
    """All agents in this process: each shift's messages move with one graph.mix over the (n, L) matrix of
    every agent's message (a permutation graph: an exact copy)."""

    def __init__(self, n: int, offsets: list[int]):
        self.n, self.offsets = n, offsets
        self.graphs = {s: shift_graph(n, s) for s in offsets}

    def exchange(self, packets: dict, step: int) -> dict:
        P = torch.stack([packets[i] for i in range(self.n)])
        got = {i: {} for i in range(self.n)}
        for s in self.offsets:
            Y = ckgraph.mix(P, self.graphs[s])
            for i in range(self.n):
                got[i][(i - s) % self.n] = Y[i]
        return got

    def sum_ints(self, values: list[int]) -> list[int]:
        return values


class DistributedTransport:
    """One agent per rank: each shift's message moves with distributed.gossip (batch_isend_irecv to the
    one neighbour of that shift)."""

    def __init__(self, n: int, offsets: list[int], rank: int):
        from .. import distributed as ckd  # noqa: F401  (imports torch.distributed)

        self.n, self.offsets, self.rank = n, offsets, rank
        self.graphs = {s: shift_graph(n, s) for s in offsets}

    def exchange(self, packets: dict, step: int) -> dict:
        from .. import distributed as ckd

        (i, packet), = packets.items()
        return {i: {(i - s) % self.n: ckd.gossip(packet, self.graphs[s], step) for s in self.offsets}}

    def sum_ints(self, values: list[int]) -> list[int]:
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.int64)
        dist.all_reduce(t)
        return t.tolist()


# ---- agents ------------------------------------------------------------------------------------------

@dataclass
class Config:
    name: str
    rule: str
    attack: str
    ratio: float  # fraction of the parameters a message carries; 1.0: uncompressed (the dense model)


@dataclass
class Agent:
    index: int
    honest: bool
    theta: torch.Tensor                      # the model (honest) / the model it pretends to have (Byzantine)
    X: torch.Tensor | None = None
    y: torch.Tensor | None = None
    gen: torch.Generator | None = None
    residual: torch.Tensor | None = None     # theta_sent - public copy (error feedback)
    sent: torch.Tensor | None = None         # theta when the last message was made
    copies: dict = field(default_factory=dict)  # neighbour -> its public copy, as this agent knows it


def make_agents(owned: list[int], n: int, byzantine: list[int], shards: list, theta0: torch.Tensor,
                offsets: list[int], seed: int) -> list[Agent]:
    agents = []
    for i in owned:
        honest = i not in byzantine
        a = Agent(i, honest, theta0.clone(), residual=torch.zeros_like(theta0), sent=theta0.clone(),
                  copies={(i - s) % n: theta0.clone() for s in offsets})
        if honest and shards[i] is not None:
            a.X, a.y = shards[i]
            a.gen = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * i + 1)
        agents.append(a)
    return agents


def _pack(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """A sparse message as one float32 tensor [values, indices] (indices < 2^24 are exact in float32)."""
    return torch.cat([values.float(), indices.float()])


def _unpack_into(copy: torch.Tensor, packet: torch.Tensor, dense: bool) -> None:
    if dense:
        copy.copy_(packet)
        return
    k = packet.numel() // 2
    values, indices = packet[:k], packet[k:]
    if not bool(torch.isfinite(indices).all()) or not bool((indices == indices.round()).all()):
        raise ValueError("a message carries non-integral indices")
    msg = compress.SparseMsg(values.contiguous(), indices.to(torch.int32).contiguous(), copy.numel())
    copy.add_(compress.decompress(msg))  # decompress checks the indices' range


def _honest_packet(a: Agent, k: int, dense: bool) -> torch.Tensor:
    if dense:
        return a.theta.clone()
    delta = a.theta - a.sent
    msg = compress.ef_topk_(delta, a.residual, k)  # residual <- theta - (public copy after this message)
    a.sent = a.theta.clone()
    return _pack(msg.values, msg.indices)


def _attack_target(a: Agent, attack: str, honest_neighbours: list[int], n_local: int, round_: int, seed: int):
    H = torch.stack([a.copies[j] for j in honest_neighbours])
    if attack == "sign_flip":
        return attacks.sign_flip(H, f=1)[0]
    if attack == "ipm":
        return attacks.ipm(H, tau=2.0, f=1)[0]
    if attack == "alie":
        return attacks.alie(H, f=1, n=n_local)[0] if H.shape[0] >= 2 else H[0].clone()
    if attack == "gaussian":
        return attacks.gaussian(H, f=1, sigma=1.0, seed=seed * 100_003 + 101 * round_ + a.index)[0]
    raise ValueError(f"attack: expected one of {', '.join(ATTACKS)}, got {attack!r}")


def _byzantine_packet(a: Agent, attack: str, byzantine: set, k: int, dense: bool, round_: int, seed: int):
    """The attack's target model for this agent's public copy, sent in the honest format (k entries)."""
    honest_neighbours = sorted(j for j in a.copies if j not in byzantine)
    target = _attack_target(a, attack, honest_neighbours, len(a.copies) + 1, round_, seed)
    if dense:
        a.theta = target
        return target.clone()
    msg = compress.topk(target - a.theta, k)  # a.theta: its public copy, which it moves towards the target
    a.theta = a.theta + compress.decompress(msg)
    return _pack(msg.values, msg.indices)


def _aggregate(rule: str, Z: list, f: int) -> torch.Tensor:
    if rule == "mean":
        return aggregate.mean(Z)
    if rule == "median":
        return aggregate.median(Z)
    if rule == "geometric_median":
        return aggregate.geometric_median(Z)
    if rule in ("trimmed_mean", "meamed", "phocas", "krum"):
        return getattr(aggregate, rule)(Z, f)
    raise ValueError(f"rule: expected one of {', '.join(RULES)}, got {rule!r}")


@dataclass
class Setup:
    n: int
    byzantine: list
    offsets: list
    shapes: _model.Shapes
    shards: list
    X_test: torch.Tensor
    y_test: torch.Tensor
    theta0: torch.Tensor
    rounds: int
    local_steps: int
    batch: int
    lr: float
    gamma: float
    f_rule: int
    seed: int


def run_config(cfg: Config, setup: Setup, transport, owned: list[int], progress=None) -> dict:
    """Runs one configuration; every process returns the same dict (accuracy per round, bytes per round,
    digests of the honest models)."""
    n, d = setup.n, setup.shapes.size
    dense = cfg.ratio >= 1.0
    k = d if dense else max(1, int(round(cfg.ratio * d)))
    byz = set(setup.byzantine) if cfg.attack != "none" else set()
    agents = make_agents(owned, n, sorted(byz), setup.shards, setup.theta0, setup.offsets, setup.seed)
    n_honest = n - len(setup.byzantine)
    accuracy, sent_bytes = [], []
    for r in range(setup.rounds):
        packets, my_bytes = {}, 0
        for a in agents:
            if a.honest and a.X is not None:
                a.theta = _model.sgd_steps(a.theta, a.X, a.y, setup.shapes, setup.local_steps, setup.batch,
                                           setup.lr, a.gen)
            if a.index in byz:
                packets[a.index] = _byzantine_packet(a, cfg.attack, byz, k, dense, r, setup.seed)
            else:
                packets[a.index] = _honest_packet(a, k, dense)
            my_bytes += packets[a.index].numel() * packets[a.index].element_size() * len(setup.offsets)
        received = transport.exchange(packets, r)
        correct = 0
        for a in agents:
            for j, packet in received[a.index].items():
                _unpack_into(a.copies[j], packet, dense)
            if a.index in byz:
                continue
            Z = [a.theta] + [a.copies[j] for j in sorted(a.copies)]
            target = _aggregate(cfg.rule, Z, setup.f_rule)
            a.theta = a.theta + setup.gamma * (target - a.theta)
            if a.index not in setup.byzantine:  # the agents that hold data are the ones evaluated
                correct += _model.correct(a.theta, setup.X_test, setup.y_test, setup.shapes)
        correct, total_bytes = transport.sum_ints([correct, my_bytes])
        accuracy.append(correct / (n_honest * setup.X_test.shape[0]))
        sent_bytes.append(total_bytes)
        if progress is not None:
            progress(r + 1, accuracy[-1])
    digests = {a.index: hashlib.sha256(a.theta.numpy().tobytes()).hexdigest()[:16]
               for a in agents if a.index not in setup.byzantine}
    return {"name": cfg.name, "rule": cfg.rule, "attack": cfg.attack, "ratio": cfg.ratio, "k": k,
            "accuracy": accuracy, "bytes": sent_bytes, "digests": digests}
