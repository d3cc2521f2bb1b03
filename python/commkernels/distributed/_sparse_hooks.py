"""DDP communication hooks that send sparse messages: top-k with error feedback, rand-k with a shared seed.

Usage::

    state = TopKState(ratio=0.01)
    ddp_model.register_comm_hook(state, topk_hook)
    ...
    state.bytes_last_step, state.bytes_total      # payload this rank sent

Both keep an error-feedback residual per parameter (``_state.Residuals``), float32 (float64 for float64
gradients), which survives DDP's bucket rebuilds.
"""

import torch
import torch.distributed as dist

from ..compress import SparseMsg, ef_topk_, pack, randk, sparse_aggregate, unpack
from ._state import HookState, Layout, Residuals, as_bytes, check_ratio, check_seed, count_k, residual_dtype


_CODECS = (None, "auto", "raw", "delta", "bitmap")


class TopKState(HookState):
    """State of ``topk_hook``: the ratio, the residuals and the byte counts.

    ratio: the fraction of each bucket sent, k = ceil(ratio * bucket size) (at least 1).
    index_codec: None (default): the message travels as k values and k int32 indices, a fixed size, in
    one all_gather. "auto", "delta", "bitmap" or "raw": it travels as ``compress.pack(msg, index_codec)``
    (the wire format; "auto" picks the smallest index coding, e.g. 1-byte delta varints at k/d = 1%), whose
    length varies: an all_gather of the lengths (8 bytes), then one of the buffers padded to the longest.
    process_group: the group the hook talks to (default: the world).
    """

    def __init__(self, ratio: float = 0.01, index_codec=None, process_group=None) -> None:
        super().__init__(process_group)
        self.ratio = check_ratio(ratio)
        if index_codec not in _CODECS:
            raise ValueError(f"index_codec: expected one of {_CODECS}, got {index_codec!r}")
        self.index_codec = index_codec
        self.residuals = Residuals()


def topk_hook(state: TopKState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Top-k with error feedback (EF14): ``ef_topk_(grad, residual, k)`` on the bucket, an all_gather of
    the fixed-size messages (k values in the residual's dtype, then k int32 indices, as one byte tensor:
    k (itemsize + 4) bytes per rank), and on every rank the mean of the n messages by ``sparse_aggregate``
    (summed in rank order, so bitwise the same on every rank). The residual keeps what was not sent.
    With ``state.index_codec`` set, the messages travel packed (see TopKState): the length all_gather
    blocks inside the call, the buffers' all_gather does not.
    """
    buffer = bucket.buffer()
    layout = Layout.of(bucket)
    n = layout.numel
    k = count_k(state.ratio, n)
    residual = state.residuals.get(layout, buffer, residual_dtype(buffer.dtype))
    msg = ef_topk_(buffer, residual, k)
    if state.index_codec is not None:
        return _send_packed(state, bucket, buffer, msg)
    payload = as_bytes(msg.values, msg.indices)
    value_bytes = k * msg.values.element_size()
    gathered = [torch.empty_like(payload) for _ in range(state.world_size)]
    work = dist.all_gather(gathered, payload, group=state.group, async_op=True)
    state._sent(bucket, payload.numel())
    value_dtype = msg.values.dtype

    def decode(fut) -> torch.Tensor:
        fut.value()
        msgs = [SparseMsg(g[:value_bytes].view(value_dtype), g[value_bytes:].view(torch.int32), n) for g in gathered]
        if value_dtype == buffer.dtype:
            return sparse_aggregate(msgs, n, average=True, out=buffer)
        return buffer.copy_(sparse_aggregate(msgs, n, average=True))

    return work.get_future().then(decode)


def _mean_into(buffer: torch.Tensor, msgs, n: int) -> torch.Tensor:
    if msgs[0].values.dtype == buffer.dtype and msgs[0].values.device == buffer.device:
        return sparse_aggregate(msgs, n, average=True, out=buffer)
    return buffer.copy_(sparse_aggregate(msgs, n, average=True))


def _send_packed(state: TopKState, bucket, buffer: torch.Tensor, msg: SparseMsg) -> torch.futures.Future:
    n = msg.size
    packed = pack(msg, state.index_codec)  # on the CPU (CUDA messages are copied there)
    # NCCL moves device tensors only; gloo moves CPU ones (and CUDA ones, through the host)
    device = buffer.device if dist.get_backend(state.group) == "nccl" else torch.device("cpu")
    length = torch.tensor([packed.numel()], dtype=torch.int64, device=device)
    lengths = [torch.empty_like(length) for _ in range(state.world_size)]
    dist.all_gather(lengths, length, group=state.group)
    lengths = [int(t) for t in lengths]
    longest = max(lengths)
    payload = torch.zeros(longest, dtype=torch.uint8, device=device)
    payload[:packed.numel()] = packed.to(device)
    gathered = [torch.empty_like(payload) for _ in range(state.world_size)]
    work = dist.all_gather(gathered, payload, group=state.group, async_op=True)
    state._sent(bucket, length.numel() * 8 + longest)

    def decode(fut) -> torch.Tensor:
        fut.value()
        msgs = []
        for g, m in zip(gathered, lengths):
            values, indices, _ = unpack(g[:m].cpu())
            msgs.append(SparseMsg(values.to(buffer.device), indices.to(buffer.device), n))
        return _mean_into(buffer, msgs, n)

    return work.get_future().then(decode)


class RandKState(HookState):
    """State of ``randk_hook``.

    ratio: the fraction of each bucket sent, k = ceil(ratio * bucket size) (at least 1).
    seed: shared by all ranks (it must be the same everywhere: the ranks agree on the indices through it).
    error_feedback: keep what was not sent in a residual (default) and send the selected entries as they
    are; without it the message is unbiased (values scaled by size / k) and nothing is kept.
    """

    def __init__(self, ratio: float = 0.01, seed: int = 0, error_feedback: bool = True, process_group=None) -> None:
        super().__init__(process_group)
        self.ratio = check_ratio(ratio)
        self.seed = check_seed(seed)
        self.error_feedback = bool(error_feedback)
        self.residuals = Residuals()


def randk_hook(state: RandKState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Rand-k with a shared seed: every rank selects the same k indices, ``randk_indices(size, k, seed,
    step)`` with step = ``state.step_key(bucket)`` ((iteration << 20) | bucket index), so only the k
    values travel, in one all_reduce (k itemsize bytes per rank); the mean lands at those indices, zero
    elsewhere.

    With error feedback: p = residual + grad; the message is p at the indices; the residual is p with them
    zeroed. Without: the message is grad at the indices times size / k (unbiased).
    """
    buffer = bucket.buffer()
    layout = Layout.of(bucket)
    n = layout.numel
    k = count_k(state.ratio, n)
    step = state.step_key(bucket)
    if state.error_feedback:
        residual = state.residuals.get(layout, buffer, residual_dtype(buffer.dtype))
        residual.add_(buffer)
        values, indices, _ = randk(residual, k, state.seed, step, unbiased=False)
        residual[indices.long()] = 0
    else:
        values, indices, _ = randk(buffer, k, state.seed, step, unbiased=True)
    work = dist.all_reduce(values, group=state.group, async_op=True)
    state._sent(bucket, values.numel() * values.element_size())
    world = state.world_size

    def place(fut) -> torch.Tensor:
        mean = fut.value()[0].div_(world)
        buffer.zero_()
        buffer[indices.long()] = mean.to(buffer.dtype)
        return buffer

    return work.get_future().then(place)
