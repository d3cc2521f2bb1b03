"""What every compression hook keeps between steps: the process group, the bytes it sent, and state per
parameter that survives DDP's bucket rebuilds.

DDP hands a hook one bucket at a time: a flat buffer holding the gradients of a few parameters, one after
the other in ``bucket.parameters()`` order. Which parameters share a bucket is not fixed: DDP builds its
buckets once at construction and again after the first iteration (``_rebuild_buckets``, in the order the
gradients became ready), and ``bucket.index()`` then names different parameters. State kept per bucket
index would be added to the wrong gradients after a rebuild (torch's PowerSGD hook sidesteps this by
sending uncompressed for the first ``start_powerSGD_iter`` iterations). Here state is keyed by the
bucket's *parameters* (their identities, in order) and every element of it belongs to one parameter: when
a bucket of a new composition arrives, its residual is assembled from where each of its parameters' pieces
lived before (zero for a parameter never seen), so error feedback carries on across a rebuild exactly.
A state belongs to one model: it keeps references to the parameters it has seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Layout:
    """One bucket's parameters and the offset of each one's gradient in the bucket's flat buffer."""

    key: tuple[int, ...]  # id() of each parameter, in order (the parameters are kept alive by ``params``)
    params: tuple[torch.Tensor, ...]
    offsets: tuple[int, ...]
    numel: int

    @classmethod
    def of(cls, bucket: dist.GradBucket) -> "Layout":
        params = tuple(bucket.parameters())
        offsets, total = [], 0
        for p in params:
            offsets.append(total)
            total += p.numel()
        n = bucket.buffer().numel()
        if total != n:  # DDP packs a bucket's gradients back to back; anything else is not understood here
            raise RuntimeError(f"bucket {bucket.index()}: its parameters hold {total} elements but its buffer "
                               f"{n}: unexpected DDP bucket layout")
        return cls(tuple(id(p) for p in params), params, tuple(offsets), n)

    def pieces(self):
        """(parameter, offset, numel) for each parameter of the bucket."""
        return ((p, off, p.numel()) for p, off in zip(self.params, self.offsets))


class Residuals:
    """Flat per-bucket residuals whose elements belong to parameters, carried across bucket rebuilds.

    ``get(layout, like, dtype)`` returns the residual of the bucket ``layout`` describes (created on first
    sight: each parameter's piece copied from the bucket it was in before, zero for a new parameter);
    buckets none of whose parameters are left are dropped.
    """

    def __init__(self) -> None:
        self._flat: dict[tuple[int, ...], torch.Tensor] = {}
        # id(param) -> (bucket key, offset, param): the parameter is kept alive, so its id cannot be reused
        self._where: dict[int, tuple[tuple[int, ...], int, torch.Tensor]] = {}

    def get(self, layout: Layout, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        flat = self._flat.get(layout.key)
        if flat is not None:
            return flat
        flat = torch.zeros(layout.numel, dtype=dtype, device=like.device)
        for p, off, n in layout.pieces():
            old = self._where.get(id(p))
            if old is not None:
                flat[off:off + n].copy_(self._flat[old[0]][old[1]:old[1] + n])
            self._where[id(p)] = (layout.key, off, p)
        self._flat[layout.key] = flat
        alive = {key for key, _, _ in self._where.values()}
        for key in [key for key in self._flat if key not in alive]:
            del self._flat[key]
        return flat

    def of_parameter(self, p: torch.Tensor) -> torch.Tensor | None:
        """The residual of one parameter (a view, flat), or None if none is kept."""
        where = self._where.get(id(p))
        if where is None:
            return None
        key, off, _ = where
        return self._flat[key][off:off + p.numel()]

    def clear(self) -> None:
        self._flat.clear()
        self._where.clear()


def residual_dtype(dtype: torch.dtype) -> torch.dtype:
    """Error feedback accumulates in float32 (float64 for float64 gradients)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class HookState:
    """Common to the compression hooks: the process group, the step counter and the byte counts.

    Bytes are the payload this rank hands to the collectives, per step (``bytes_last_step``) and since the
    start (``bytes_total``); ``dense_bytes_last_step`` is what DDP's default hook would hand over for the
    same buckets (the gradients in their dtype), so ``bytes_last_step / dense_bytes_last_step`` is the
    compression ratio. What the transport moves depends on its algorithm (a ring all-reduce sends about
    2 (n-1)/n times its payload; an all-gather n-1 times). A step ends with DDP's last bucket
    (``bucket.is_last()``); ``steps`` counts completed steps.
    """

    def __init__(self, process_group=None) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialized: call init_process_group first")
        self.process_group = process_group
        group = process_group if process_group is not None else dist.group.WORLD
        self.world_size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.steps = 0
        self.bytes_last_step = 0
        self.bytes_total = 0
        self.dense_bytes_last_step = 0
        self._bytes_step = 0
        self._dense_step = 0

    @property
    def group(self):
        return self.process_group if self.process_group is not None else dist.group.WORLD

    def _sent(self, bucket: dist.GradBucket, nbytes: int) -> None:
        """Counts a bucket's payload; closes the step at DDP's last bucket."""
        buffer = bucket.buffer()
        self._bytes_step += int(nbytes)
        self._dense_step += buffer.numel() * buffer.element_size()
        self.bytes_total += int(nbytes)
        if bucket.is_last():
            self.bytes_last_step, self.dense_bytes_last_step = self._bytes_step, self._dense_step
            self._bytes_step = self._dense_step = 0
            self.steps += 1

    def step_key(self, bucket: dist.GradBucket) -> int:
        """The Philox ``step`` for this bucket in this iteration: (steps << 20) | bucket.index(). The same on
        every rank (DDP's buckets and their indices are agreed by all ranks)."""
        index = bucket.index()
        if not 0 <= index < (1 << 20):
            raise RuntimeError(f"bucket index {index} outside [0, 2^20)")
        return (self.steps << 20) | index


def count_k(ratio: float, n: int) -> int:
    """Elements a ratio keeps of n: ceil(ratio * n), at least 1 when n > 0."""
    return min(n, max(1 if n else 0, math.ceil(ratio * n)))


def check_ratio(ratio) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise TypeError(f"ratio: expected a float in (0, 1], got {type(ratio).__name__}")
    ratio = float(ratio)
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio: expected 0 < ratio <= 1, got {ratio}")
    return ratio


def check_seed(seed, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{name}: expected an int, got {type(seed).__name__}")
    if not 0 <= seed < (1 << 64):
        raise ValueError(f"{name}: expected 0 <= {name} < 2^64, got {seed}")
    return seed


def completed(tensor: torch.Tensor) -> torch.futures.Future:
    """A Future already holding ``tensor``, for hooks that finish their work inside the call."""
    fut: torch.futures.Future = torch.futures.Future()
    fut.set_result(tensor)
    return fut


def as_bytes(*tensors: torch.Tensor) -> torch.Tensor:
    """The tensors' bytes back to back, as one uint8 tensor (one collective instead of several)."""
    return torch.cat([t.reshape(-1).view(torch.uint8) for t in tensors])
