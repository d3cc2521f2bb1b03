"""DDP communication hooks that send quantized messages: scaled sign (worker and server error feedback,
as DeepSpeed's 1-bit Adam/LAMB) and QSGD. Their messages are not linear (each carries its own scale or
norms), so they travel by all_gather of packed bytes and every rank decodes all n of them.
"""

import torch
import torch.distributed as dist

from ..compress import QsgdMsg, SignMsg, qsgd, qsgd_decompress, qsgd_ef_, sign_compress_ef_, sign_decompress
from ._state import HookState, Layout, Residuals, as_bytes, check_seed, residual_dtype

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


class SignState(HookState):
    """State of ``sign_hook``: the worker residuals (this rank's own), the server residuals (the same on
    every rank) and the byte counts.

    scale: the sign's scale, "l1" (mean |p|, EF-signSGD's) or "l2" (||p||_2 / sqrt(d), 1-bit Adam's).
    """

    def __init__(self, scale: str = "l1", process_group=None) -> None:
        super().__init__(process_group)
        if scale not in ("l1", "l2"):
            raise ValueError(f"scale: expected 'l1' or 'l2', got {scale!r}")
        self.scale = scale
        self.residuals = Residuals()
        self.server_residuals = Residuals()


def sign_hook(state: SignState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Scaled sign with worker and server error feedback, bit-packed (1-bit Adam's compressed all-reduce).

    Worker: p = residual + grad, message = ``sign_compress_ef_(grad, residual, scale)`` (1 bit per element
    plus a float32 scale: ceil(d / 8) + 4 bytes); all_gather of the packed messages. Every rank then decodes
    the n messages and averages them (float32, float64 for float64 gradients, summed in rank order), and
    plays the server: q =
    server_residual + mean, result = ``sign_decompress(sign_compress_ef_(mean, server_residual, scale))``.
    The mean is bitwise the same on every rank and the kernels are deterministic, so every rank keeps the
    same server residual and gets the same result, with no second round of communication.
    """
    buffer = bucket.buffer()
    layout = Layout.of(bucket)
    n = layout.numel
    acc = residual_dtype(buffer.dtype)
    residual = state.residuals.get(layout, buffer, acc)
    server_residual = state.server_residuals.get(layout, buffer, acc)
    msg = sign_compress_ef_(buffer, residual, state.scale)
    payload = as_bytes(msg.scale, msg.bits)  # the float32 first: its view stays aligned
    gathered = [torch.empty_like(payload) for _ in range(state.world_size)]
    work = dist.all_gather(gathered, payload, group=state.group, async_op=True)
    state._sent(bucket, payload.numel())
    scale = state.scale

    acc_name = str(acc).removeprefix("torch.")

    def decode(fut) -> torch.Tensor:
        fut.value()
        mean = None
        for g in gathered:  # in rank order, in the accumulation dtype
            part = sign_decompress(SignMsg(g[4:], g[:4].view(torch.float32), n), acc_name)
            mean = part if mean is None else mean.add_(part)
        mean /= len(gathered)
        server_msg = sign_compress_ef_(mean, server_residual, scale)
        return buffer.copy_(sign_decompress(server_msg, acc_name))

    return work.get_future().then(decode)


def rank_seed(seed: int, rank: int) -> int:
    """The Philox seed rank ``rank`` draws with: (seed XOR (rank * 0x9E3779B97F4A7C15)) mod 2^64, so ranks
    draw independently from one user seed."""
    return (seed ^ (rank * _GOLDEN)) & _MASK64


class QsgdState(HookState):
    """State of ``qsgd_hook``.

    levels: QSGD's s (1..65535; codes of 1 + ceil(log2(levels + 1)) bits). bucket_size: elements per
    norm. seed: the user seed; rank r draws with ``rank_seed(seed, r)``. error_feedback: quantize
    residual + grad and keep the quantization error (``qsgd_ef_``); without it plain unbiased QSGD.
    """

    def __init__(self, levels: int = 15, bucket_size: int = 512, seed: int = 0, error_feedback: bool = False,
                 process_group=None) -> None:
        super().__init__(process_group)
        if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= 65535:
            raise ValueError(f"levels: expected an int in [1, 65535], got {levels!r}")
        if isinstance(bucket_size, bool) or not isinstance(bucket_size, int) or bucket_size < 1:
            raise ValueError(f"bucket_size: expected an int >= 1, got {bucket_size!r}")
        self.levels = levels
        self.bucket_size = bucket_size
        self.seed = check_seed(seed)
        self.error_feedback = bool(error_feedback)
        self.residuals = Residuals()


def qsgd_hook(state: QsgdState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """QSGD: each rank quantizes its bucket (``qsgd`` or ``qsgd_ef_`` with ``rank_seed(seed, rank)`` and
    step = ``state.step_key(bucket)``), all_gather of the packed codes and float32 norms
    (ceil(d (1 + ceil(log2(levels + 1))) / 8) + 4 ceil(d / bucket_size) bytes per rank), and every rank
    decodes the n messages and averages them (float32, float64 for float64 gradients, in rank order: the
    same on every rank).
    """
    buffer = bucket.buffer()
    layout = Layout.of(bucket)
    n = layout.numel
    seed, step = rank_seed(state.seed, state.rank), state.step_key(bucket)
    levels, bucket_size = state.levels, state.bucket_size
    if state.error_feedback:
        residual = state.residuals.get(layout, buffer, residual_dtype(buffer.dtype))
        msg = qsgd_ef_(buffer, residual, levels, seed, step, bucket_size)
    else:
        msg = qsgd(buffer, levels, seed, step, bucket_size)
    payload = as_bytes(msg.norms, msg.codes)  # the float32 first: its view stays aligned
    norm_bytes = 4 * msg.norms.numel()
    gathered = [torch.empty_like(payload) for _ in range(state.world_size)]
    work = dist.all_gather(gathered, payload, group=state.group, async_op=True)
    state._sent(bucket, payload.numel())
    acc_name = str(residual_dtype(buffer.dtype)).removeprefix("torch.")

    def decode(fut) -> torch.Tensor:
        fut.value()
        mean = None
        for g in gathered:  # in rank order, in the accumulation dtype
            m = QsgdMsg(g[norm_bytes:], g[:norm_bytes].view(torch.float32), n, levels, bucket_size)
            part = qsgd_decompress(m, acc_name)
            mean = part if mean is None else mean.add_(part)
        mean /= len(gathered)
        return buffer.copy_(mean)

    return work.get_future().then(decode)
