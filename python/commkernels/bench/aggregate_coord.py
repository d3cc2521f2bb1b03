"""aggregate_coord cases: the coordinate-wise robust rules (median, trimmed_mean, meamed, phocas) and the
mean, against eager torch composites on the stacked (n, d) tensor and against ByzFL when it loads.

Inputs: an (n, d) torch tensor of standard normals, n in {10, 32, 64}, d in {1e5, 1e6, 1e7} (--quick
drops 1e7; n = 64 at d = 1e7 is skipped: its 2.6 GB input plus the sort baselines' values and int64
indices, ~10 GB, do not fit beside the other users of a shared machine), float32 and bfloat16, f = n // 4.
Baselines:
  median        torch.median(X, dim=0) (the lower median; ours averages the two middle values for even n,
                which is no cheaper), ByzFL Median
  trimmed_mean  torch.sort(X, dim=0) then the mean of the middle rows, ByzFL TrMean
  meamed        torch composite: median (sorted middle rows), |X - med|, topk(n - f, smallest), gather,
                mean; ByzFL Meamed
  phocas        torch composite: the sort trimmed mean as center, then as meamed (ByzFL has no Phocas)
  mean          X.mean(dim=0) (bfloat16: with a float32 accumulator, X.mean(0, dtype=float32))
Floor: one read of X and one write of the result, (n + 1) d itemsize bytes.

ByzFL's package __init__ imports torchvision (for its datasets); its aggregators need only NumPy, torch
and SciPy, so when ``import byzfl`` fails the aggregators module is loaded without the package __init__.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types

import torch

from .. import aggregate as agg
from .harness import Case, Prepared

FAMILY = "aggregate_coord"
SIZES = (10**5, 10**6, 10**7)
QUICK_SIZES = (10**5, 10**6)
WORKERS = (10, 32, 64)
DTYPES = ("float32", "bfloat16")
SEED = 20240611
MAX_ELEMENTS = 4 * 10**8  # n = 64 at d = 1e7 skipped (see above)


@functools.cache
def byzfl_aggregators():
    """ByzFL's aggregators module, or None where ByzFL is not installed or does not load."""
    spec = importlib.util.find_spec("byzfl")
    if spec is None:
        return None
    try:
        return importlib.import_module("byzfl.aggregators.aggregators")
    except ImportError:
        pass
    saved = {name: module for name, module in sys.modules.items() if name == "byzfl" or name.startswith("byzfl.")}
    try:
        for name in saved:
            del sys.modules[name]
        package = types.ModuleType("byzfl")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["byzfl"] = package
        return importlib.import_module("byzfl.aggregators.aggregators")
    except ImportError:
        for name in [n for n in sys.modules if n == "byzfl" or n.startswith("byzfl.")]:
            del sys.modules[name]
        sys.modules.update(saved)
        return None


def _stacked(n: int, d: int, dtype: str, device: str) -> torch.Tensor:
    generator = torch.Generator(device=device).manual_seed(SEED + n)
    return torch.randn(n, d, generator=generator, dtype=getattr(torch, dtype), device=device)


def _nearest_mean(X: torch.Tensor, center: torch.Tensor, keep: int) -> torch.Tensor:
    idx = (X - center).abs().topk(keep, dim=0, largest=False, sorted=False).indices
    return X.gather(0, idx).mean(dim=0)


def _sorted_median(S: torch.Tensor) -> torch.Tensor:
    n = S.shape[0]
    return (S[(n - 1) // 2] + S[n // 2]) / 2


def _median(X, f):
    return agg.median(X), {"torch.median(dim=0)": lambda: torch.median(X, dim=0)}


def _trimmed_mean(X, f):
    n = X.shape[0]
    return agg.trimmed_mean(X, f), {"torch.sort + mean": lambda: torch.sort(X, dim=0).values[f:n - f].mean(dim=0)}


def _meamed(X, f):
    n = X.shape[0]

    def torch_meamed():
        return _nearest_mean(X, _sorted_median(torch.sort(X, dim=0).values), n - f)

    return agg.meamed(X, f), {"torch sort + topk + gather": torch_meamed}


def _phocas(X, f):
    n = X.shape[0]

    def torch_phocas():
        return _nearest_mean(X, torch.sort(X, dim=0).values[f:n - f].mean(dim=0), n - f)

    return agg.phocas(X, f), {"torch sort + topk + gather": torch_phocas}


def _mean(X, f):
    if X.dtype == torch.bfloat16:
        return agg.mean(X), {"X.mean(0, dtype=float32)": lambda: X.mean(dim=0, dtype=torch.float32).to(X.dtype)}
    return agg.mean(X), {"X.mean(0)": lambda: X.mean(dim=0)}


BYZFL = {"median": ("Median", {}), "trimmed_mean": ("TrMean", {"f": True}), "meamed": ("Meamed", {"f": True})}

# kernel: (how ours is called, the baselines' builder)
KERNELS = {
    "median": ("commkernels.aggregate.median(X)", _median),
    "trimmed_mean": ("commkernels.aggregate.trimmed_mean(X, f)", _trimmed_mean),
    "meamed": ("commkernels.aggregate.meamed(X, f)", _meamed),
    "phocas": ("commkernels.aggregate.phocas(X, f)", _phocas),
    "mean": ("commkernels.aggregate.mean(X)", _mean),
}


def _prepare(kernel: str, n: int, d: int, dtype: str, device: str) -> Prepared:
    X = _stacked(n, d, dtype, device)
    f = n // 4
    call = {"median": lambda: agg.median(X), "trimmed_mean": lambda: agg.trimmed_mean(X, f),
            "meamed": lambda: agg.meamed(X, f), "phocas": lambda: agg.phocas(X, f), "mean": lambda: agg.mean(X)}[kernel]
    _, baselines = KERNELS[kernel][1](X, f)
    byzfl = byzfl_aggregators()
    if byzfl is not None and kernel in BYZFL:
        name, kwargs = BYZFL[kernel]
        rule = getattr(byzfl, name)(**({"f": f} if kwargs else {}))
        baselines[f"ByzFL {name}"] = lambda: rule(X)
    return Prepared(ours=call, baselines=baselines)


def _short(d: int) -> str:
    exponent = len(str(d)) - 1
    return f"1e{exponent}" if d == 10**exponent else str(d)


def _case(kernel: str, n: int, d: int, dtype: str, device: str) -> Case:
    itemsize = torch.empty(0, dtype=getattr(torch, dtype)).element_size()
    return Case(family=FAMILY, kernel=kernel, ours=KERNELS[kernel][0],
                columns={"n": str(n), "d": _short(d), "dtype": dtype, "f": str(n // 4)},
                params={"n": n, "d": d, "dtype": dtype, "f": n // 4}, floor_bytes=(n + 1) * d * itemsize,
                prepare=lambda: _prepare(kernel, n, d, dtype, device))


def cases(device: str = "cpu", quick: bool = False, sizes=None) -> list[Case]:
    sizes = list(sizes) if sizes else list(QUICK_SIZES if quick else SIZES)
    out = []
    for kernel in KERNELS:
        for n in WORKERS:
            for d in sizes:
                for dtype in DTYPES:
                    if n * d <= MAX_ELEMENTS:
                        out.append(_case(kernel, n, d, dtype, device))
    return out
