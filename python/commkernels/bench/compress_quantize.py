"""compress quantizer cases: sign, error-feedback sign, TernGrad, QSGD, natural compression and
stochastic rounding against eager torch (and NumPy) composites on the same data.

Inputs are torch tensors of standard normals, d in {1e6, 1e7, 1e8} (1e8 skipped by --quick), float32
and bfloat16 (stochastic_round: float32 only; the residual of sign_compress_ef_ is float32). The
baselines produce the same information as ours in the form their authors' libraries use (GRACE-style: a
byte per sign or ternary value, int8 QSGD levels), with their own RNG: they are the fastest composites
we know, not bit-compatible kernels. Floors: one read of the input plus the write of the codes.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from .. import compress as ck
from .harness import Case, Prepared

FAMILY = "compress"
SIZES = (10**6, 10**7, 10**8)
QUICK_SIZES = (10**6, 10**7)
DTYPES = ("float32", "bfloat16")
SEED = 20240607
QSGD_LEVELS = 16
QSGD_BUCKET = 500  # divides every d here, so the torch baseline can view x as (d / bucket, bucket)


def _randn(d: int, dtype: str, device: str, stream: int) -> torch.Tensor:
    generator = torch.Generator(device=device).manual_seed(SEED + stream)
    return torch.randn(d, generator=generator, dtype=getattr(torch, dtype), device=device)


def _packbits(negative: torch.Tensor):
    if negative.device.type == "cpu":
        return np.packbits(negative.numpy(), bitorder="little")
    # no packbits on the GPU in torch: weights 2^j summed over groups of 8
    n = negative.numel()
    padded = torch.nn.functional.pad(negative.to(torch.uint8), (0, (-n) % 8)).view(-1, 8)
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=negative.device)
    return (padded * weights).sum(dim=1, dtype=torch.uint8)


def _sign(d: int, dtype: str, device: str) -> Prepared:
    x = _randn(d, dtype, device, 11)

    def torch_sign_packbits():
        scale = x.abs().mean(dtype=torch.float32)
        return _packbits(x < 0), scale

    return Prepared(ours=lambda: ck.sign_compress(x, "l1"), baselines={"torch sign + packbits": torch_sign_packbits})


def _sign_ef(d: int, dtype: str, device: str) -> Prepared:
    grad = _randn(d, dtype, device, 12)
    saved = _randn(d, "float32", device, 13)
    residual = torch.empty_like(saved)

    def torch_sign_ef():
        p = residual.add_(grad)
        scale = p.abs().mean()
        negative = p < 0
        bits = _packbits(negative)
        p.sub_(torch.where(negative, -scale, scale))
        return bits, scale

    return Prepared(ours=lambda: ck.sign_compress_ef_(grad, residual, "l1"),
                    baselines={"torch EF sign + packbits": torch_sign_ef}, reset=lambda: residual.copy_(saved))


def _terngrad(d: int, dtype: str, device: str) -> Prepared:
    x = _randn(d, dtype, device, 14)
    steps = itertools.count()

    def torch_terngrad():
        a = x.abs()
        scale = a.max()
        keep = torch.rand(x.shape, dtype=x.dtype, device=device) * scale < a
        return (torch.sign(x) * keep).to(torch.int8), scale

    return Prepared(ours=lambda: ck.terngrad(x, SEED, next(steps)), baselines={"torch terngrad (int8)": torch_terngrad})


def _qsgd(d: int, dtype: str, device: str) -> Prepared:
    x = _randn(d, dtype, device, 15)
    steps = itertools.count()

    def torch_qsgd():
        buckets = x.view(-1, QSGD_BUCKET).float()
        norms = torch.linalg.vector_norm(buckets, dim=1, keepdim=True)
        r = buckets.abs() * QSGD_LEVELS / norms
        low = r.floor()
        xi = low + (torch.rand_like(r) < r - low)
        return (xi * torch.sign(buckets)).to(torch.int8), norms

    return Prepared(ours=lambda: ck.qsgd(x, QSGD_LEVELS, SEED, next(steps), QSGD_BUCKET),
                    baselines={"torch QSGD (int8)": torch_qsgd})


def _natural(d: int, dtype: str, device: str) -> Prepared:
    x = _randn(d, dtype, device, 16)
    steps = itertools.count()

    def torch_natural():
        mantissa, exponent = torch.frexp(x.float())  # |x| = |m| 2^e, |m| in [0.5, 1)
        up = torch.rand_like(mantissa) < 2 * mantissa.abs() - 1
        code = (exponent + up).to(torch.int8)
        return torch.where(x < 0, -code, code)

    return Prepared(ours=lambda: ck.natural_compress(x, SEED, next(steps)),
                    baselines={"torch natural (frexp)": torch_natural})


def _stochastic_round(d: int, dtype: str, device: str) -> Prepared:
    x = _randn(d, "float32", device, 17)
    steps = itertools.count()
    bits = x.view(torch.int32)

    def torch_stochastic_round():  # add 16 random bits below the bfloat16 mantissa, then truncate
        noise = torch.randint(0, 1 << 16, x.shape, dtype=torch.int32, device=device)
        return ((bits + noise) & -65536).view(torch.float32).to(torch.bfloat16)

    return Prepared(ours=lambda: ck.stochastic_round(x, "bfloat16", SEED, next(steps)),
                    baselines={"torch randint + mask": torch_stochastic_round})


def _qsgd_code_bytes(d: int) -> int:
    return (d * ck.qsgd_code_bits(QSGD_LEVELS) + 7) // 8 + 4 * (d // QSGD_BUCKET)


# kernel: (how ours is called, prepare, floor bytes (d, itemsize of the input), dtypes)
KERNELS = {
    "sign_compress": ("commkernels.compress.sign_compress(x, 'l1')", _sign, lambda d, size: d * size + d // 8, DTYPES),
    "sign_compress_ef_": ("commkernels.compress.sign_compress_ef_(grad, residual, 'l1')", _sign_ef,
                          lambda d, size: d * (size + 8) + d // 8, DTYPES),
    "terngrad": ("commkernels.compress.terngrad(x, seed, step)", _terngrad, lambda d, size: d * size + d // 4, DTYPES),
    "qsgd": (f"commkernels.compress.qsgd(x, {QSGD_LEVELS}, seed, step, {QSGD_BUCKET})", _qsgd,
             lambda d, size: d * size + _qsgd_code_bytes(d), DTYPES),
    "natural_compress": ("commkernels.compress.natural_compress(x, seed, step)", _natural,
                         lambda d, size: d * (size + 1), DTYPES),
    "stochastic_round": ("commkernels.compress.stochastic_round(x, 'bfloat16', seed, step)", _stochastic_round,
                         lambda d, size: d * (size + 2), ("float32",)),
}


def _short(d: int) -> str:
    exponent = len(str(d)) - 1
    return f"1e{exponent}" if d == 10**exponent else str(d)


def _case(kernel: str, d: int, dtype: str, device: str) -> Case:
    ours, prepare, floor, _ = KERNELS[kernel]
    itemsize = torch.empty(0, dtype=getattr(torch, dtype)).element_size()
    return Case(family=FAMILY, kernel=kernel, ours=ours, columns={"d": _short(d), "dtype": dtype},
                params={"d": d, "dtype": dtype}, floor_bytes=floor(d, itemsize),
                prepare=lambda: prepare(d, dtype, device))


def cases(device: str = "cpu", quick: bool = False, sizes=None) -> list[Case]:
    sizes = list(sizes) if sizes else list(QUICK_SIZES if quick else SIZES)
    out = []
    for kernel, (_, _, _, dtypes) in KERNELS.items():
        for d in sizes:
            if kernel == "qsgd" and d % QSGD_BUCKET:
                continue
            out += [_case(kernel, d, dtype, device) for dtype in dtypes]
    return out
