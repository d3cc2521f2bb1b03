"""Collectives built from torch.distributed primitives: robust all-reduce, gossip (and push-sum), and the
expert-parallel all-to-all around an MoE plan.

All of them take a torch tensor on this rank and an optional process group (default: the world), and
are called by every rank of the group (gossip: by every rank, each talking to its neighbours only).
"""

from __future__ import annotations

import importlib
import inspect
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

_FLOAT = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _group(group):
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialized: call init_process_group first")
    return group if group is not None else dist.group.WORLD


def _float_tensor(t, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch tensor, got {type(t).__name__}")
    if t.dtype not in _FLOAT:
        raise TypeError(f"{name}: expected dtype float32, float64, float16 or bfloat16, got {t.dtype}")


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---- robust all-reduce ------------------------------------------------------------------------------------

def _resolve_rule(rule):
    if callable(rule):
        return rule
    if not isinstance(rule, str):
        raise TypeError(f"rule: expected the name of a commkernels.aggregate rule or a callable, got "
                        f"{type(rule).__name__}")
    try:
        aggregate = importlib.import_module("commkernels.aggregate")
    except ImportError as error:
        raise ValueError(f"rule: {rule!r} names a commkernels.aggregate rule, but commkernels.aggregate is not "
                         f"available ({error}); pass a callable rule(X, f, **params) instead") from None
    fn = getattr(aggregate, rule, None)
    if not callable(fn) or rule.startswith("_"):
        raise ValueError(f"rule: commkernels.aggregate has no rule {rule!r}")
    return fn


def robust_all_reduce(tensor: torch.Tensor, rule, f: int, group=None, **params) -> torch.Tensor:
    """The robust aggregate of the n ranks' tensors, the same (bitwise) on every rank.

    all_gather of the n tensors into an (n, *shape) tensor X (row i = group rank i), then
    ``rule(X, f=f, **params)``: ``rule`` is the name of a ``commkernels.aggregate`` rule ("median",
    "trimmed_mean", "krum", ...) or any callable with that signature (``f`` is passed only to rules
    that have an ``f`` parameter or ``**kwargs``: the coordinate-wise median has none). Every rank holds
    the same X and the rules are deterministic, so every rank computes the same result; nothing else is
    communicated.
    Bytes sent per rank: the tensor's (all_gather).

    tensor: a float tensor of the same shape and dtype on every rank (contiguous or not; it is not
    modified). f: the number of Byzantine ranks the rule tolerates (checked by the rule). Returns a new
    tensor of ``tensor``'s shape (the rule's dtype, ``tensor``'s for the aggregate rules).
    """
    g = _group(group)
    _float_tensor(tensor, "tensor")
    if isinstance(f, bool) or not isinstance(f, int) or f < 0:
        raise ValueError(f"f: expected an int >= 0, got {f!r}")
    fn = _resolve_rule(rule)
    n = dist.get_world_size(g)
    src = tensor.detach().contiguous()
    X = torch.empty((n, *src.shape), dtype=src.dtype, device=src.device)
    if dist.get_backend(g) == "nccl":
        dist.all_gather_into_tensor(X, src, group=g)
    else:  # the list form, which every backend has; the rows of X are the outputs
        dist.all_gather(list(X.unbind(0)), src, group=g)
    if _takes_f(fn):
        params["f"] = f
    return fn(X, **params)


def _takes_f(fn) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): pass f
        return True
    return any(p.name == "f" or p.kind == p.VAR_KEYWORD for p in parameters)


# ---- gossip -----------------------------------------------------------------------------------------------

def one_peer_exponential(n: int, step: int) -> np.ndarray:
    """The one-peer exponential mixing matrix at ``step``: y_i = (x_i + x_{(i - 2^(step mod tau)) mod n}) / 2,
    tau = ceil(log2 n) (exact average after tau steps when n is a power of 2). Row = receiver."""
    W = np.zeros((n, n))
    if n == 1:
        W[0, 0] = 1.0
        return W
    tau = math.ceil(math.log2(n))
    hop = 2 ** (step % tau)
    for i in range(n):
        W[i, i] += 0.5
        W[i, (i - hop) % n] += 0.5
    return W


def mixing_matrix(graph, n: int, step: int = 0) -> np.ndarray:
    """The (n, n) float64 mixing matrix W (row = receiver: y_i = sum_j W[i, j] x_j) that ``graph`` means at
    ``step``: a dense matrix (NumPy or torch), an object with ``to_dense()`` (``commkernels.graph.Graph``:
    edge src -> dst with weight W[dst, src]), the name "one_peer_exponential", or a callable
    ``step -> one of those`` (time-varying graphs)."""
    if callable(graph) and not hasattr(graph, "to_dense"):
        return mixing_matrix(graph(step), n, step)
    if isinstance(graph, str):
        if graph != "one_peer_exponential":
            raise ValueError(f"graph: unknown topology {graph!r} (known: 'one_peer_exponential'; else pass W)")
        return one_peer_exponential(n, step)
    if hasattr(graph, "to_dense"):
        W = graph.to_dense()
    else:
        W = graph
    if isinstance(W, torch.Tensor):
        W = W.detach().cpu().double().numpy()
    W = np.asarray(W, dtype=np.float64)
    if W.shape != (n, n):
        raise ValueError(f"graph: expected an ({n}, {n}) mixing matrix for a group of {n} ranks, got shape {W.shape}")
    if not np.isfinite(W).all():
        raise ValueError("graph: the mixing matrix has non-finite entries")
    return W


def _exchange(tensors_out: dict, recv_from: list, like: torch.Tensor, g) -> dict:
    """Sends tensors_out[k] to group rank k and receives one tensor like ``like`` from each rank in
    recv_from, in one batch_isend_irecv; returns {rank: received}."""
    received = {j: torch.empty_like(like) for j in recv_from}
    ops = [dist.P2POp(dist.isend, t, dist.get_global_rank(g, k), g) for k, t in sorted(tensors_out.items())]
    ops += [dist.P2POp(dist.irecv, received[j], dist.get_global_rank(g, j), g) for j in recv_from]
    if ops:
        for req in dist.batch_isend_irecv(ops):
            req.wait()
    return received


def gossip(tensor: torch.Tensor, graph, step: int = 0, group=None) -> torch.Tensor:
    """One round of gossip mixing with neighbours only: y_i = sum_j W[i, j] x_j for this rank i.

    W = ``mixing_matrix(graph, n, step)`` (static, time-varying through ``step``, or one-peer exponential):
    every rank must pass the same graph and step. Rank i sends its tensor to each k with W[k, i] != 0
    (k != i) and receives from each j with W[i, j] != 0, in one ``batch_isend_irecv``; nothing goes to
    ranks that are not neighbours. The sum is W[i, i] x_i (skipped when W[i, i] = 0: a zero weight is a
    missing edge, so an infinite x_i does not become NaN) plus the neighbours' terms in increasing rank
    order, in float32 (float64 for float64), rounded once to the tensor's dtype. Bytes sent per rank:
    out-degree times the tensor's bytes. Returns a new tensor; ``tensor`` is not modified.
    """
    g = _group(group)
    _float_tensor(tensor, "tensor")
    n, i = dist.get_world_size(g), dist.get_rank(g)
    W = mixing_matrix(graph, n, step)
    x = tensor.detach().contiguous()
    out_to = [k for k in range(n) if k != i and W[k, i] != 0]
    in_from = [j for j in range(n) if j != i and W[i, j] != 0]
    received = _exchange({k: x for k in out_to}, in_from, x, g)
    acc = _acc(x.dtype)
    # a zero weight is a missing edge: it adds nothing (not 0 * x, which is NaN for an infinite x)
    y = x.to(acc) * W[i, i] if W[i, i] != 0 else torch.zeros_like(x, dtype=acc)
    for j in in_from:
        y += received[j].to(acc) * W[i, j]
    return y.to(x.dtype)


def push_sum(tensor: torch.Tensor, weight: torch.Tensor, graph, step: int = 0, group=None):
    """One round of push-sum (Kempe et al. 2003; Stochastic Gradient Push) over a directed graph:
    (x_i', w_i') = (sum_j P[i, j] x_j, sum_j P[i, j] w_j); the estimate of the average is x' / w'.

    P = ``mixing_matrix(graph, n, step)`` must be column-stochastic (each sender's weights sum to 1:
    ValueError otherwise), e.g. P[k, j] = 1 / (out_degree(j) + 1) for j's out-neighbours and itself.
    Rank j sends its (x_j, w_j) to each out-neighbour k (P[k, j] != 0) in one batch_isend_irecv (x and w
    travel as one tensor, in float32, float64 for float64). weight: a 1-element float tensor (start
    with 1). Sums as in ``gossip``.
    Returns (x', w') as new tensors.
    """
    g = _group(group)
    _float_tensor(tensor, "tensor")
    _float_tensor(weight, "weight")
    if weight.numel() != 1:
        raise ValueError(f"weight: expected a 1-element tensor, got {weight.numel()} elements")
    n, i = dist.get_world_size(g), dist.get_rank(g)
    P = mixing_matrix(graph, n, step)
    sums = P.sum(axis=0)
    if not np.allclose(sums, 1.0, rtol=0, atol=1e-12 * n):
        raise ValueError(f"graph: push-sum needs a column-stochastic matrix; column sums are {sums.tolist()}")
    acc = _acc(tensor.dtype)
    packed = torch.cat([tensor.detach().reshape(-1).to(acc), weight.detach().reshape(1).to(acc)])
    out_to = [k for k in range(n) if k != i and P[k, i] != 0]
    in_from = [j for j in range(n) if j != i and P[i, j] != 0]
    received = _exchange({k: packed for k in out_to}, in_from, packed, g)
    y = packed * P[i, i] if P[i, i] != 0 else torch.zeros_like(packed)  # a zero weight is a missing edge
    for j in in_from:
        y += received[j] * P[i, j]
    return y[:-1].reshape(tensor.shape).to(tensor.dtype), y[-1:].to(weight.dtype)


# ---- expert parallel --------------------------------------------------------------------------------------

@dataclass
class Dispatched:
    """What ``dispatch`` returns and ``combine`` needs: the received rows and the split sizes.

    rows: [sum of recv_splits, h], this rank's experts' rows, grouped by source rank, and inside a
    source by local expert (in expert order). counts: (world, experts_per_rank) int64, rows per (source
    rank, local expert). send_splits / recv_splits: rows sent to / received from each rank.
    total_rows: the rows of dispatch's x (trailing padding rows, never sent, included).
    """

    rows: torch.Tensor
    counts: torch.Tensor
    send_splits: list
    recv_splits: list
    group: object
    total_rows: int


def _expert_rows(plan) -> torch.Tensor:
    """Rows per expert, int64 on the CPU: from a moe Plan (its offsets, padding included; else its counts)
    or an array of per-expert counts."""
    if hasattr(plan, "offsets"):
        offsets = torch.as_tensor(np.asarray(_to_host(plan.offsets)), dtype=torch.int64)
        return offsets[1:] - offsets[:-1]
    counts = plan.counts if hasattr(plan, "counts") else plan
    return torch.as_tensor(np.asarray(_to_host(counts)), dtype=torch.int64).reshape(-1)


def _to_host(a):
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return a


def dispatch(x: torch.Tensor, plan, group=None) -> Dispatched:
    """Expert-parallel dispatch: sends each expert's rows to the rank that holds the expert.

    x: [rows, h], the rows of this rank's tokens grouped by expert in expert order (``moe.permute(tokens,
    plan)``); plan: the ``moe.plan`` result or the per-expert counts themselves. With a Plan, expert e's
    rows are x[offsets[e]:offsets[e+1]] (its padding rows, if any, travel with it) and rows from
    offsets[E] on (align > 1 without capacity: padding up to the bound) are not sent. The E experts are
    split evenly over the n ranks: rank r holds experts r E/n .. (r+1) E/n - 1 (E must be a multiple of n).
    One all_to_all_single of the (n, E/n) count matrix, then one of the rows with those split sizes.
    Returns a ``Dispatched``; run the local experts on its rows, then ``combine``.
    """
    g = _group(group)
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise TypeError("x: expected a torch tensor of rows [rows, ...]")
    n = dist.get_world_size(g)
    per_expert = _expert_rows(plan)
    E = per_expert.numel()
    if E % n:
        raise ValueError(f"plan: {E} experts do not split evenly over {n} ranks")
    used = int(per_expert.sum())
    if x.shape[0] < used or (x.shape[0] != used and not hasattr(plan, "offsets")):
        raise ValueError(f"x: expected {used} rows (the plan's), got {x.shape[0]}")
    if (per_expert < 0).any():
        raise ValueError("plan: negative expert counts")
    local = E // n
    # the counts travel on x's device under NCCL (it takes device tensors only), on the CPU otherwise
    device = x.device if dist.get_backend(g) == "nccl" else torch.device("cpu")
    send_counts = per_expert.reshape(n, local).to(device)
    recv_counts = torch.empty_like(send_counts)
    dist.all_to_all_single(recv_counts, send_counts, group=g)
    recv_counts = recv_counts.cpu()
    send_splits = send_counts.sum(1).tolist()
    recv_splits = recv_counts.sum(1).tolist()
    rows = x.new_empty((sum(recv_splits), *x.shape[1:]))
    dist.all_to_all_single(rows, x[:used].contiguous(), recv_splits, send_splits, group=g)
    return Dispatched(rows, recv_counts, send_splits, recv_splits, g, x.shape[0])


def combine(y: torch.Tensor, dispatched: Dispatched) -> torch.Tensor:
    """The inverse all-to-all of ``dispatch``: the local experts' outputs y (rows in the order
    ``dispatched.rows`` had) go back to the ranks they came from. Returns [rows, ...] with the rows of
    dispatch's x (expert order; trailing padding rows zero), ready for ``moe.combine(out, plan, weights)``."""
    if not isinstance(y, torch.Tensor) or y.dim() < 1 or y.shape[0] != dispatched.rows.shape[0]:
        raise ValueError(f"y: expected {dispatched.rows.shape[0]} rows like the dispatched ones")
    used = sum(dispatched.send_splits)
    out = y.new_empty((dispatched.total_rows, *y.shape[1:]))
    out[used:].zero_()
    dist.all_to_all_single(out[:used], y.contiguous(), dispatched.send_splits, dispatched.recv_splits,
                           group=dispatched.group)
    return out
