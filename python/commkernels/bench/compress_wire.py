"""compress cases for the wire side: sparse_aggregate, pack/unpack, and the wire-size table.

- sparse_aggregate of W in {8, 64} workers' top-k messages (k/d = 1%, float32) at d in {1e6, 1e7} (and 1e8
  unless --quick), against torch's index_add_ into a zeroed tensor (one call per message, and one call on
  the concatenated messages); all write into the same reused output (``out=``), so that no contender pays
  first-touch page faults.
- pack / unpack of one top-k message (d in {1e6, 1e7}, k/d in {1%, 0.1%}, index_codec="auto") against
  the GRACE-style encoding (int64 indices and float32 values as bytes, torch.cat) and its decoding.
- threshold(x, v) (v = the exact k-th largest |x|) against torch.nonzero(|x| > v); estimate_threshold
  "exact" against torch.topk(|x|, k).min() and "sample" against a torch sample + topk (DGC's recipe).
- ``wire_size_table()``: bytes per sent element of every index codec next to int64 / int32 + values.

Rows join the "compress" family (bench/registry.py lists this module under it).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import compress as ck
from .harness import Case, Prepared

FAMILY = "compress"
AGGREGATE_SIZES = (10**6, 10**7, 10**8)
QUICK_SIZES = (10**6, 10**7)
WORKERS = (8, 64)
AGGREGATE_FRACTION = 0.01
PACK_FRACTIONS = (0.01, 0.001)
SEED = 20240607


def _short(d: int) -> str:
    exponent = len(str(d)) - 1
    return f"1e{exponent}" if d == 10**exponent else str(d)


def _messages(d: int, k: int, workers: int, device: str):
    """Top-k messages of `workers` different standard-normal vectors (each drawn, selected, then dropped)."""
    generator = torch.Generator(device=device).manual_seed(SEED)
    msgs = []
    for _ in range(workers):
        msgs.append(ck.topk(torch.randn(d, generator=generator, device=device), k))
    return msgs


def _aggregate(d: int, k: int, workers: int, device: str) -> Prepared:
    msgs = _messages(d, k, workers, device)
    long_indices = [m.indices.long() for m in msgs]  # index_add_ wants int64: converted once, untimed
    all_indices, all_values = torch.cat(long_indices), torch.cat([m.values for m in msgs])

    out = torch.zeros(d, device=device)  # every contender writes into one reused output

    def index_add_loop():
        out.zero_()
        for i, m in zip(long_indices, msgs):
            out.index_add_(0, i, m.values)
        return out

    def index_add_cat():
        return out.zero_().index_add_(0, all_indices, all_values)

    return Prepared(ours=lambda: ck.sparse_aggregate(msgs, d, out=out),
                    baselines={"torch index_add_ per message": index_add_loop,
                               "torch index_add_ concatenated": index_add_cat})


def _pack(d: int, k: int, device: str) -> Prepared:
    (msg,) = _messages(d, k, 1, device)
    idx64 = msg.indices.long()

    def grace_pack():  # int64 indices and float32 values, as one byte tensor
        return torch.cat([idx64.view(torch.uint8), msg.values.view(torch.uint8)]).cpu()

    return Prepared(ours=lambda: ck.pack(msg), baselines={"int64+values torch.cat": grace_pack})


def _unpack(d: int, k: int, device: str) -> Prepared:
    (msg,) = _messages(d, k, 1, device)
    buf = ck.pack(msg)
    grace = torch.cat([msg.indices.long().view(torch.uint8), msg.values.view(torch.uint8)]).cpu()

    def grace_unpack():
        return grace[8 * k:].view(torch.float32).clone(), grace[: 8 * k].view(torch.int64).to(torch.int32)

    return Prepared(ours=lambda: ck.unpack(buf), baselines={"int64+values slices": grace_unpack})


def _threshold(d: int, k: int, device: str) -> Prepared:
    x = torch.randn(d, generator=torch.Generator(device=device).manual_seed(SEED), device=device)
    v = ck.estimate_threshold(x, k)
    mag = torch.empty_like(x)

    def torch_threshold():
        i = torch.nonzero(torch.abs(x, out=mag) > v).squeeze(1)
        return x[i], i

    return Prepared(ours=lambda: ck.threshold(x, v), baselines={"torch nonzero(|x| > v)": torch_threshold})


def _estimate(d: int, k: int, device: str, method: str) -> Prepared:
    x = torch.randn(d, generator=torch.Generator(device=device).manual_seed(SEED), device=device)
    mag = torch.empty_like(x)
    m = min(d, max(1000, math.ceil(d / 100)))
    ks = min(m, math.ceil(k * m / d))

    def torch_exact():
        return float(torch.topk(torch.abs(x, out=mag), k, sorted=False).values.min())

    def torch_sample():  # DGC's recipe in torch: a random sample, then its top-k
        sample = x[torch.randint(0, d, (m,), device=device)]
        return float(torch.topk(sample.abs(), ks, sorted=False).values.min())

    baseline = {"exact": ("torch.topk(|x|).min()", torch_exact), "sample": ("torch sample + topk", torch_sample)}
    name, fn = baseline[method]
    return Prepared(ours=lambda: ck.estimate_threshold(x, k, method), baselines={name: fn})


def _case(kernel: str, ours: str, columns: dict, params: dict, floor: int, prepare) -> Case:
    return Case(family=FAMILY, kernel=kernel, ours=ours, columns=columns, params=params, floor_bytes=floor,
                prepare=prepare)


def cases(device: str = "cpu", quick: bool = False, sizes=None) -> list[Case]:
    sizes = list(sizes) if sizes else list(QUICK_SIZES if quick else AGGREGATE_SIZES)
    out = []
    for d in sizes:
        k = max(1, round(d * AGGREGATE_FRACTION))
        for workers in WORKERS:
            if d * workers > 64 * 10**7 and quick:
                continue
            out.append(_case(
                "sparse_aggregate", "commkernels.compress.sparse_aggregate(msgs, d)",
                {"d": _short(d), "k/d": "1%", "workers": str(workers), "dtype": "float32"},
                {"d": d, "k": k, "workers": workers, "dtype": "float32"},
                4 * d + workers * k * 8,  # write the output once, read every message once
                lambda d=d, k=k, workers=workers: _aggregate(d, k, workers, device)))
    for d in [s for s in sizes if s <= 10**7]:
        for fraction in PACK_FRACTIONS:
            k = max(1, round(d * fraction))
            columns = {"d": _short(d), "k/d": f"{fraction * 100:.3g}%", "dtype": "float32"}
            params = {"d": d, "k": k, "dtype": "float32"}
            out.append(_case("pack", "commkernels.compress.pack(msg)", columns, params, 8 * k + 5 * k,
                             lambda d=d, k=k: _pack(d, k, device)))
            out.append(_case("unpack", "commkernels.compress.unpack(buf)", columns, params, 5 * k + 8 * k,
                             lambda d=d, k=k: _unpack(d, k, device)))
    for d in sizes:
        for fraction in PACK_FRACTIONS:
            k = max(1, round(d * fraction))
            columns = {"d": _short(d), "k/d": f"{fraction * 100:.3g}%", "dtype": "float32"}
            params = {"d": d, "k": k, "dtype": "float32"}
            out.append(_case("threshold", "commkernels.compress.threshold(x, v)", columns, params, 8 * d + 8 * k,
                             lambda d=d, k=k: _threshold(d, k, device)))  # count pass + write pass read x
            for method in ("exact", "sample"):
                out.append(_case(f"estimate_threshold[{method}]", f"commkernels.compress.estimate_threshold(x, k, {method!r})",
                                 columns, params, 4 * d if method == "exact" else 4 * min(d, max(1000, math.ceil(d / 100))),
                                 lambda d=d, k=k, method=method: _estimate(d, k, device, method)))
    return out


def wire_size_table(d: int = 10**7, fractions=(0.01, 0.001), seed: int = SEED) -> list[dict]:
    """Bytes per sent element of a float32 top-k message of d elements (uniformly spread indices, as top-k
    of noise), for each index codec (header included), next to GRACE-style encodings and the information
    bound log2(C(d, k)) / k bits per index (about log2(e d / k))."""
    rng = np.random.default_rng(seed)
    rows = []
    for fraction in fractions:
        k = max(1, round(d * fraction))
        indices = np.sort(rng.choice(d, k, replace=False)).astype(np.int32)
        msg = ck.SparseMsg(np.zeros(k, np.float32), indices, d)
        row = {"d": d, "k": k, "k/d": fraction}
        for codec in ("raw", "delta", "bitmap", "auto"):
            row[codec] = ck.nbytes(msg, codec) / k
        row["int64 indices + values"] = 12.0
        row["int32 indices + values"] = 8.0
        bound_bits = (math.lgamma(d + 1) - math.lgamma(k + 1) - math.lgamma(d - k + 1)) / math.log(2) / k
        row["bound (index bits/8 + 4)"] = bound_bits / 8 + 4
        rows.append(row)
    return rows


if __name__ == "__main__":
    for row in wire_size_table():
        print("  ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                        for key, value in row.items()))
