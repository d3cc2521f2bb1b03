"""The PowerSGD DDP communication hook (Vogels, Karimireddy, Jaggi 2019): rank-r compression with error
feedback and warm start, orthogonalised by ``compress.orthogonalize_``.

The structure is torch's ``powerSGD_hook`` (the anchor): per bucket, each gradient of two or more
dimensions is seen as a matrix M (shape[0] x the rest) and compressed when that saves enough
((n + m) r * min_compression_rate < n m); the others (biases, small matrices) are sent as they are. Two
all_reduces per bucket: [uncompressed | P's], then [Q's]. The arithmetic is that of
``compress.powersgd_compress_`` (the paper's): A = M + residual; P = mean over ranks of A Q;
orthogonalise P; Q = mean over ranks of A^T P (kept as the next step's warm start); result P Q^T;
residual = A - result. Uncompressed parts get the mean, and their residual is A - mean, as in the paper
and in torch's hook.

Differences from torch's hook: state is keyed by parameters, not bucket indices, so no warm-up of
uncompressed steps is needed to get past DDP's bucket rebuild (``start_iter`` exists for those who want
one); Q is not re-orthogonalised before it is used (the paper's algorithm; P = A Q is orthogonalised
anyway). The hook does its two rounds inside the call (blocking collectives) and returns a completed
Future: a collective launched from a Future callback could be issued in a different order on different
ranks.
"""

import torch
import torch.distributed as dist

from ..compress import orthogonalize_
from ._state import HookState, Layout, Residuals, check_seed, completed


class PowerSGDState(HookState):
    """State of ``powersgd_hook``.

    rank: the approximation rank r (per matrix, min(r, n, m)). min_compression_rate: a matrix is
    compressed when (n + m) r * min_compression_rate < n m (torch's default 2). error_feedback,
    warm_start: as in the paper (both on by default). start_iter: steps sent uncompressed (plain mean
    all_reduce) before compression starts. eps: orthogonalize_'s eps. seed: the initial Q's are
    ``torch.randn`` draws from a ``torch.Generator`` seeded with ``seed``, one per compressed matrix in the
    order the hook meets them (buckets in DDP's order, parameters in bucket order), which is the same on
    every rank; without warm start a new Q is drawn that way every step.
    """

    def __init__(self, rank: int = 1, min_compression_rate: float = 2.0, error_feedback: bool = True,
                 warm_start: bool = True, start_iter: int = 0, eps: float = 1e-8, seed: int = 0,
                 process_group=None) -> None:
        super().__init__(process_group)
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank: expected an int >= 1, got {rank!r}")
        if not isinstance(min_compression_rate, (int, float)) or not min_compression_rate >= 0:
            raise ValueError(f"min_compression_rate: expected a number >= 0, got {min_compression_rate!r}")
        if isinstance(start_iter, bool) or not isinstance(start_iter, int) or start_iter < 0:
            raise ValueError(f"start_iter: expected an int >= 0, got {start_iter!r}")
        self.matrix_rank = rank
        self.min_compression_rate = float(min_compression_rate)
        self.error_feedback = bool(error_feedback)
        self.warm_start = bool(warm_start)
        self.start_iter = start_iter
        self.eps = float(eps)
        self.seed = check_seed(seed)
        self.generator = torch.Generator().manual_seed(self.seed % (1 << 63))
        self.residuals = Residuals()
        self.qs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(param) -> (param, Q)

    def plan(self, layout: Layout):
        """For each parameter of a bucket: (param, offset, numel, (n, m, r) or None when sent as is)."""
        out = []
        for p, off, numel in layout.pieces():
            shape = None
            if p.dim() >= 2 and numel > 0:
                n = p.shape[0]
                m = numel // n
                r = min(n, m, self.matrix_rank)
                if (n + m) * r * self.min_compression_rate < n * m:
                    shape = (n, m, r)
            out.append((p, off, numel, shape))
        return out

    def _q(self, p: torch.Tensor, m: int, r: int, like: torch.Tensor) -> torch.Tensor:
        entry = self.qs.get(id(p))
        if entry is not None and self.warm_start and tuple(entry[1].shape) == (m, r):
            return entry[1]
        q = torch.randn(m, r, generator=self.generator, dtype=like.dtype).to(like.device)
        self.qs[id(p)] = (p, q)
        return q


def powersgd_hook(state: PowerSGDState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """PowerSGD on one bucket (see the module docstring). Bytes per rank: (uncompressed elements +
    sum of n r + sum of m r) * itemsize."""
    buffer = bucket.buffer()
    group, world = state.group, state.world_size
    if state.steps < state.start_iter:
        dist.all_reduce(buffer, group=group)
        state._sent(bucket, buffer.numel() * buffer.element_size())
        return completed(buffer.div_(world))
    layout = Layout.of(bucket)
    plan = state.plan(layout)
    if state.error_feedback:
        residual = state.residuals.get(layout, buffer, buffer.dtype)
        buffer.add_(residual)  # A = M + residual
        residual.copy_(buffer)  # holds A until the result is known
    plain = [buffer[off:off + numel] for _, off, numel, shape in plan if shape is None]
    mats = [(buffer[off:off + numel].view(shape[0], shape[1]), state._q(p, shape[1], shape[2], buffer), shape)
            for p, off, numel, shape in plan if shape is not None]
    n_plain = sum(t.numel() for t in plain)
    n_p = sum(n * r for _, _, (n, _, r) in mats)
    n_q = sum(m * r for _, _, (_, m, r) in mats)

    # round 1: the uncompressed parts and the P's
    first = torch.empty(n_plain + n_p, dtype=buffer.dtype, device=buffer.device)
    ps, at = [], n_plain
    if plain:
        torch.cat(plain, out=first[:n_plain])
    for a, q, (n, _, r) in mats:
        p_view = first[at:at + n * r].view(n, r)
        torch.matmul(a, q, out=p_view)
        ps.append(p_view)
        at += n * r
    if first.numel():  # (every rank has the same plan, so all skip together)
        dist.all_reduce(first, group=group)
        first.div_(world)
    at = 0
    for t in plain:
        t.copy_(first[at:at + t.numel()])
        at += t.numel()

    # round 2: orthogonalise each P, then the Q's
    second = torch.empty(n_q, dtype=buffer.dtype, device=buffer.device)
    at = 0
    new_qs = []
    for (a, _, (_, m, r)), p_view in zip(mats, ps):
        orthogonalize_(p_view, state.eps)
        q_view = second[at:at + m * r].view(m, r)
        torch.matmul(a.t(), p_view, out=q_view)
        new_qs.append(q_view)
        at += m * r
    if second.numel():
        dist.all_reduce(second, group=group)
        second.div_(world)
    for (a, q, _), p_view, q_new in zip(mats, ps, new_qs):
        q.copy_(q_new)  # the warm start of the next step
        torch.matmul(p_view, q.t(), out=a)  # the result, in the bucket
    if state.error_feedback:
        residual.sub_(buffer)  # A - result
    state._sent(bucket, (n_plain + n_p + n_q) * buffer.element_size())
    return completed(buffer)
