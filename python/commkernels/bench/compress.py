"""compress cases: top-k, error-feedback top-k and rand-k against torch and NumPy on the same data.

Inputs are torch tensors of standard normals, d in {1e6, 1e7, 1e8} (1e8 skipped by --quick), k/d in
{1%, 0.1%}, float32 and bfloat16 (the residual of ef_topk_ is float32). NumPy baselines run on the same
memory (``tensor.numpy()``) where NumPy has the dtype (float32) and the data is on the CPU.
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
FRACTIONS = (0.01, 0.001)
DTYPES = ("float32", "bfloat16")
RANDK_FIXED_K = 10**4  # randk also at this k for every d >= 1e6, so that its independence of d shows
SEED = 20240607


def _randn(d: int, dtype: str, device: str, stream: int) -> torch.Tensor:
    generator = torch.Generator(device=device).manual_seed(SEED + stream)
    return torch.randn(d, generator=generator, dtype=getattr(torch, dtype), device=device)


def _use_numpy(device: str, *dtypes: str) -> bool:
    return device == "cpu" and all(dtype == "float32" for dtype in dtypes)


def _topk(d: int, k: int, dtype: str, device: str) -> Prepared:
    x = _randn(d, dtype, device, 1)
    mag = torch.empty_like(x)

    def torch_topk():
        i = torch.topk(torch.abs(x, out=mag), k, sorted=False).indices
        return x[i], i

    baselines = {"torch.topk": torch_topk}
    if _use_numpy(device, dtype):
        xn, magn = x.numpy(), mag.numpy()

        def numpy_topk():
            i = np.argpartition(np.abs(xn, out=magn), d - k)[d - k:]
            return xn[i], i

        baselines["numpy.argpartition"] = numpy_topk
    return Prepared(ours=lambda: ck.topk(x, k), baselines=baselines)


def _ef_topk(d: int, k: int, dtype: str, device: str) -> Prepared:
    grad = _randn(d, dtype, device, 2)
    saved = _randn(d, "float32", device, 3)
    residual = torch.empty_like(saved)
    mag = torch.empty_like(saved)

    def torch_ef_topk():
        p = residual.add_(grad)
        i = torch.topk(torch.abs(p, out=mag), k, sorted=False).indices
        v = p[i]
        p.index_fill_(0, i, 0)
        return v, i

    baselines = {"torch eager EF": torch_ef_topk}
    if _use_numpy(device, dtype):
        g, r, m = grad.numpy(), residual.numpy(), mag.numpy()

        def numpy_ef_topk():
            np.add(r, g, out=r)
            i = np.argpartition(np.abs(r, out=m), d - k)[d - k:]
            v = r[i]
            r[i] = 0
            return v, i

        baselines["numpy EF"] = numpy_ef_topk
    return Prepared(ours=lambda: ck.ef_topk_(grad, residual, k), baselines=baselines,
                    reset=lambda: residual.copy_(saved))


def _randk(d: int, k: int, dtype: str, device: str) -> Prepared:
    x = _randn(d, dtype, device, 4)
    scale = d / k
    steps, numpy_steps = itertools.count(), itertools.count()

    def torch_randk():
        i = torch.randperm(d, device=device)[:k]
        return x[i] * scale, i

    baselines = {"torch.randperm": torch_randk}
    if _use_numpy(device, dtype):
        xn = x.numpy()

        def numpy_randk():  # the same contract as ours: keyed by (seed, step), distinct, ascending
            rng = np.random.default_rng((SEED, next(numpy_steps)))
            i = np.sort(rng.choice(d, k, replace=False, shuffle=False))
            return xn[i] * scale, i

        baselines["numpy.choice"] = numpy_randk
    return Prepared(ours=lambda: ck.randk(x, k, SEED, next(steps)), baselines=baselines)


# kernel: (how ours is called, prepare, floor bytes (d, k, itemsize of the input)). The floors are what
# any implementation must move: one read of x for topk; for ef_topk_ one read of grad and one read and
# one write of the float32 residual. (The spec's first estimates, 2 d itemsize and d (itemsize + 12),
# assumed a second read for the select; the kernels select in the same pass.)
KERNELS = {
    "topk": ("commkernels.compress.topk(x, k)", _topk, lambda d, k, size: d * size),
    "ef_topk_": ("commkernels.compress.ef_topk_(grad, residual, k)", _ef_topk, lambda d, k, size: d * (size + 8)),
    "randk": ("commkernels.compress.randk(x, k, seed, step)", _randk, lambda d, k, size: k * (size + 4)),
}


def _short(d: int) -> str:
    exponent = len(str(d)) - 1
    return f"1e{exponent}" if d == 10**exponent else str(d)


def _case(kernel: str, d: int, k: int, dtype: str, device: str) -> Case:
    ours, prepare, floor = KERNELS[kernel]
    itemsize = torch.empty(0, dtype=getattr(torch, dtype)).element_size()
    return Case(family=FAMILY, kernel=kernel, ours=ours,
                columns={"d": _short(d), "k": _short(k), "k/d": f"{k / d * 100:.3g}%", "dtype": dtype},
                params={"d": d, "k": k, "k_over_d": k / d, "dtype": dtype},
                floor_bytes=floor(d, k, itemsize), prepare=lambda: prepare(d, k, dtype, device))


def cases(device: str = "cpu", quick: bool = False, sizes=None) -> list[Case]:
    sizes = list(sizes) if sizes else list(QUICK_SIZES if quick else SIZES)
    out = []
    for kernel in KERNELS:
        for d in sizes:
            ks = [max(1, round(d * fraction)) for fraction in FRACTIONS]
            if kernel == "randk" and d >= 10**6 and RANDK_FIXED_K not in ks:
                ks.append(RANDK_FIXED_K)
            out += [_case(kernel, d, k, dtype, device) for k, dtype in itertools.product(ks, DTYPES)]
    return out
