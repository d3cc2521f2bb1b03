"""aggregate_side cases: the asynchronous averaging kernels (buffer_add_, fedasync_mix_,
variance_corrected_mean) and the attacks' honest statistics (honest_stats, robustness_score) against eager
torch composites on the same data.

Inputs are torch tensors of standard normals. buffer_add_ and fedasync_mix_: d in {1e6, 1e7, 1e8} (1e8
skipped by --quick); buffer_add_ with a float32 buffer and a float32 or bfloat16 update, fedasync_mix_
float32 and bfloat16. The (n, d) kernels: n = 20 workers (16 honest for the statistics), d in {1e6, 1e7}
(at d = 1e8 the input alone would be 8 GB), float32 and bfloat16; variance_corrected_mean over 12 segments
shaped like a model's layers (a few large weights, small biases). Floors: every input read once and every
output written once.
"""

from __future__ import annotations

import torch

from .. import aggregate, attacks
from .harness import Case, Prepared

FAMILY = "aggregate_side"
SIZES = (10**6, 10**7, 10**8)
QUICK_SIZES = (10**6, 10**7)
MATRIX_MAX_D = 10**7
N_WORKERS = 20
N_HONEST = 16
SEED = 20261127


def _randn(shape, dtype: str, device: str, stream: int) -> torch.Tensor:
    generator = torch.Generator(device=device).manual_seed(SEED + stream)
    return torch.randn(shape, generator=generator, device=device).to(getattr(torch, dtype))


def _short(d: int) -> str:
    exponent = len(str(d)) - 1
    return f"1e{exponent}" if d == 10**exponent else str(d)


def _itemsize(dtype: str) -> int:
    return torch.empty(0, dtype=getattr(torch, dtype)).element_size()


def _segments(d: int) -> list[int]:
    """12 layer-like segments: 4 weights sharing 95% of d, 8 biases of about d / 2e4 each, the rest in the last."""
    bias = max(1, d // 20_000)
    weights = [int(d * 0.95) // 4] * 4
    lengths = []
    for w in weights:
        lengths += [w, bias]
    lengths += [bias] * 3
    lengths.append(d - sum(lengths))
    return lengths


def _buffer_add(d: int, dtype: str, device: str) -> Prepared:
    buffer = _randn(d, "float32", device, 1)
    update = _randn(d, dtype, device, 2)
    w = 0.125
    return Prepared(ours=lambda: aggregate.buffer_add_(buffer, update, w),
                    baselines={"torch add_(alpha)": lambda: buffer.add_(update, alpha=w)})


def _fedasync_mix(d: int, dtype: str, device: str) -> Prepared:
    x = _randn(d, dtype, device, 3)
    x_new = _randn(d, dtype, device, 4)
    alpha = 0.3
    return Prepared(ours=lambda: aggregate.fedasync_mix_(x, x_new, alpha),
                    baselines={"torch lerp_": lambda: x.lerp_(x_new, alpha)})


def _vcm(d: int, dtype: str, device: str) -> Prepared:
    X = _randn((N_WORKERS, d), dtype, device, 5)
    lengths = _segments(d)
    eps = 1e-4

    def torch_vcm():  # the authors' recipe, per segment: torch.var of every input, of the mean; rescale
        m = X.mean(dim=0, dtype=torch.float32)
        out = torch.empty(d, dtype=X.dtype, device=X.device)
        start = 0
        for length in lengths:
            s = slice(start, start + length)
            start += length
            if length < 2:
                out[s] = m[s].to(X.dtype)
                continue
            target = X[:, s].float().var(dim=1).mean()
            mu, var = m[s].mean(), m[s].var()
            out[s] = ((m[s] - mu) * torch.sqrt((target + eps) / (var + eps)) + mu).to(X.dtype)
        return out

    return Prepared(ours=lambda: aggregate.variance_corrected_mean(X, lengths, eps=eps),
                    baselines={"torch per-segment var + rescale": torch_vcm})


def _honest_stats(d: int, dtype: str, device: str) -> Prepared:
    H = _randn((N_HONEST, d), dtype, device, 6)
    return Prepared(ours=lambda: attacks.honest_stats(H),
                    baselines={"torch.std_mean(dim=0)": lambda: torch.std_mean(H, dim=0)})


def _score(d: int, dtype: str, device: str) -> Prepared:
    X = _randn((N_WORKERS, d), dtype, device, 7)
    F = _randn(d, dtype, device, 8)
    honest = list(range(N_HONEST))

    def torch_score():
        H = X[:N_HONEST]
        var, mean = torch.var_mean(H, dim=0)
        dev = (F.double() - mean.double()).square().sum()
        return float(dev / (var.double().sum() / N_HONEST))

    return Prepared(ours=lambda: attacks.robustness_score(F, X, honest),
                    baselines={"torch var_mean + sums": torch_score})


# kernel -> (how ours is called, prepare, floor bytes (d, itemsize), dtypes, largest d)
KERNELS = {
    "buffer_add_": ("aggregate.buffer_add_(buffer_fp32, update, w)", _buffer_add,
                    lambda d, s: d * (4 + s + 4), ("float32", "bfloat16"), None),
    "fedasync_mix_": ("aggregate.fedasync_mix_(x, x_new, alpha)", _fedasync_mix,
                      lambda d, s: 3 * d * s, ("float32", "bfloat16"), None),
    "variance_corrected_mean": ("aggregate.variance_corrected_mean(X, segments) (n=20, 12 segments)", _vcm,
                                lambda d, s: (N_WORKERS + 1) * d * s, ("float32", "bfloat16"), MATRIX_MAX_D),
    "honest_stats": ("attacks.honest_stats(H) (h=16)", _honest_stats,
                     lambda d, s: (N_HONEST + 2) * d * s, ("float32", "bfloat16"), MATRIX_MAX_D),
    "robustness_score": ("attacks.robustness_score(F, X, honest) (n=20, h=16)", _score,
                         lambda d, s: (N_HONEST + 1) * d * s, ("float32",), MATRIX_MAX_D),
}


def _case(kernel: str, d: int, dtype: str, device: str) -> Case:
    ours, prepare, floor, _, _ = KERNELS[kernel]
    columns = {"d": _short(d), "dtype": dtype}
    return Case(family=FAMILY, kernel=kernel, ours=ours, columns=columns, params={"d": d, "dtype": dtype},
                floor_bytes=floor(d, _itemsize(dtype)), prepare=lambda: prepare(d, dtype, device))


def cases(device: str = "cpu", quick: bool = False, sizes=None) -> list[Case]:
    sizes = list(sizes) if sizes else list(QUICK_SIZES if quick else SIZES)
    out = []
    for kernel, (_, _, _, dtypes, max_d) in KERNELS.items():
        for d in sizes:
            if max_d is not None and d > max_d:
                continue
            out += [_case(kernel, d, dtype, device) for dtype in dtypes]
    return out
