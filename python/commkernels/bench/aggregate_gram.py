"""aggregate Gram-route cases: gram, krum, geometric_median, nnm and centered_clipping against torch eager
composites on the same (n, d) tensor (and ByzFL when it is importable).

n in {10, 32, 64} workers, d in {1e5, 1e6, 1e7} (1e7 dropped by --quick; n = 64 with d = 1e7, a 2.6 GB
input whose torch baselines need as much again, is skipped on these shared machines), float32 and bfloat16. Baselines: Krum from
torch.cdist; NNM from torch.cdist, a sort and a mixing matmul; the centered Gram matrix as
(X - mean) (X - mean)^T; a straightforward torch Weiszfeld and centered clipping that re-read X every
iteration. Both sides run the same iteration counts (Weiszfeld: 10 steps from zero, tol = 0; centered
clipping: 3 steps). bfloat16 baselines compute in float32 where torch has no bfloat16 kernel (cdist).
Floors: the target of the spec, two passes over X (gram: one), plus NNM's write of its (n, d) result.
"""

from __future__ import annotations

import torch

from .. import aggregate as agg
from .harness import Case, Prepared

FAMILY = "aggregate_gram"
WORKERS = (10, 32, 64)
SIZES = (10**5, 10**6, 10**7)
QUICK_SIZES = (10**5, 10**6)
DTYPES = ("float32", "bfloat16")
SEED = 20240611
MAX_ELEMENTS = 4 * 10**8  # n * d past this (n = 64, d = 1e7) is skipped
GM_STEPS = 10
CC_STEPS = 3


def _byzfl():
    try:
        import byzfl  # noqa: F401

        return byzfl
    except ImportError:
        return None


def _data(n: int, d: int, dtype: str, device: str) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(SEED + n)
    common = torch.randn(d, generator=g, device=device)
    X = common + 0.1 * torch.randn(n, d, generator=g, device=device)
    return X.to(getattr(torch, dtype))


def _f(n: int) -> int:
    return (n - 3) // 4


def _torch_krum(X, f):
    Xf = X.float()
    D = torch.cdist(Xf, Xf) ** 2
    k = X.shape[0] - f - 2
    scores = D.sort(dim=1).values[:, 1:k + 1].sum(dim=1)
    return X[int(torch.argmin(scores))]


def _torch_nnm(X, f):
    Xf = X.float()
    D = torch.cdist(Xf, Xf)
    n = X.shape[0]
    idx = D.argsort(dim=1, stable=True)[:, : n - f]
    M = torch.zeros(n, n, device=X.device).scatter_(1, idx, 1.0 / (n - f))
    return (M @ Xf).to(X.dtype)


def _torch_gram(X):
    Xf = X.float()
    C = Xf - Xf.mean(dim=0)
    return C @ C.T


def _torch_weiszfeld(X, steps, nu=1e-6):
    Xf = X.float()
    z = torch.zeros(X.shape[1], device=X.device)
    for _ in range(steps):
        dist = torch.linalg.vector_norm(Xf - z, dim=1)
        beta = 1.0 / dist.clamp_min(nu)
        z = (beta[:, None] * Xf).sum(dim=0) / beta.sum()
    return z.to(X.dtype)


def _torch_cc(X, center, tau, steps):
    Xf, v = X.float(), center.float()
    for _ in range(steps):
        diff = Xf - v
        scale = (tau / torch.linalg.vector_norm(diff, dim=1)).clamp(max=1.0)
        v = v + (diff * scale[:, None]).mean(dim=0)
    return v.to(X.dtype)


def _prepare(kernel: str, n: int, d: int, dtype: str, device: str) -> Prepared:
    X = _data(n, d, dtype, device)
    f = _f(n)
    byzfl = _byzfl()
    if kernel == "gram":
        return Prepared(ours=lambda: agg.gram(X), baselines={"torch (X-mean)(X-mean)^T": lambda: _torch_gram(X)})
    if kernel == "krum":
        base = {"torch cdist Krum": lambda: _torch_krum(X, f)}
        if byzfl is not None:
            rule = byzfl.Krum(f=f)
            base["ByzFL Krum"] = lambda: rule(X.float())
        return Prepared(ours=lambda: agg.krum(X, f), baselines=base)
    if kernel == "nnm":
        base = {"torch cdist NNM": lambda: _torch_nnm(X, f)}
        if byzfl is not None:
            rule = byzfl.NNM(f=f)
            base["ByzFL NNM"] = lambda: rule(X.float())
        return Prepared(ours=lambda: agg.nnm(X, f), baselines=base)
    if kernel == "geometric_median":
        return Prepared(ours=lambda: agg.geometric_median(X, max_iter=GM_STEPS, tol=0.0, start="zero"),
                        baselines={"torch Weiszfeld": lambda: _torch_weiszfeld(X, GM_STEPS)})
    center = X[0].clone()
    return Prepared(ours=lambda: agg.centered_clipping(X, center, 1.0, CC_STEPS),
                    baselines={"torch centered clipping": lambda: _torch_cc(X, center, 1.0, CC_STEPS)})


KERNELS = {
    "gram": ("aggregate.gram(X)", 1),
    "krum": ("aggregate.krum(X, f=(n-3)//4)", 2),
    "geometric_median": (f"aggregate.geometric_median(X, max_iter={GM_STEPS}, tol=0, start='zero')", 2),
    "nnm": ("aggregate.nnm(X, f=(n-3)//4)", 3),
    "centered_clipping": (f"aggregate.centered_clipping(X, X[0], 1.0, {CC_STEPS})", 2),
}


def _short(d: int) -> str:
    e = len(str(d)) - 1
    return f"1e{e}" if d == 10**e else str(d)


def cases(device: str = "cpu", quick: bool = False, sizes=None) -> list[Case]:
    sizes = list(sizes) if sizes else list(QUICK_SIZES if quick else SIZES)
    out = []
    for kernel, (ours, passes) in KERNELS.items():
        for n in WORKERS:
            for d in sizes:
                if n * d > MAX_ELEMENTS:
                    continue
                for dtype in DTYPES:
                    item = 4 if dtype == "float32" else 2
                    out.append(Case(family=FAMILY, kernel=kernel, ours=ours,
                                    columns={"n": str(n), "d": _short(d), "dtype": dtype},
                                    params={"n": n, "d": d, "dtype": dtype}, floor_bytes=passes * n * d * item,
                                    prepare=lambda k=kernel, n=n, d=d, t=dtype: _prepare(k, n, d, t, device)))
    return out
