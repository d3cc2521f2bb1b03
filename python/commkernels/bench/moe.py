"""moe cases: route, plan, permute and combine (forward and backward) against eager torch composites.

route: logits [T, E] float32, T in {512, 8192}, E in {8, 64, 256, 384}, k in {2, 8}; baseline softmax +
topk + renormalise (vLLM's / Megatron-Core's eager path). plan: the ids of that routing; baseline a stable
argsort of the flat ids + bincount + the inverse permutation (what Megatron-Core's permute computes).
permute / combine: T = 8192 (2048 with --quick), E = 64, k = 8, h in {1024, 4096}, float32 and bfloat16.
Forward: ours writes into a reused ``out=`` buffer (the documented way to call it step after step); the
baselines are index_select (Megatron-Core's permute, given the sorted index) both fresh and into a reused
buffer, and index_add_ of the weighted rows (Megatron-Core's unpermute) both fresh and into a reused
buffer. Backward: torch autograd on both sides (fresh gradients everywhere), ours through the custom ops.
Floors: permute / combine move (k + 1) h bytes per token; combine's backward (2k + 1) h (grad_y written,
y and grad read for the weight gradient).
"""

from __future__ import annotations

import torch

from .. import moe
from .harness import Case, Prepared

FAMILY = "moe"
ROUTE_T = (512, 8192)
ROUTE_E = (8, 64, 256, 384)
ROUTE_K = (2, 8)
MOVE_T, MOVE_T_QUICK, MOVE_E, MOVE_K = 8192, 2048, 64, 8
HIDDEN = (1024, 4096)
DTYPES = ("float32", "bfloat16")
SEED = 20240607


def _gen(device: str, stream: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(SEED + stream)


def _logits(t: int, e: int, device: str) -> torch.Tensor:
    return torch.randn(t, e, generator=_gen(device, 1), device=device)


def _route(t: int, e: int, k: int, device: str) -> Prepared:
    logits = _logits(t, e, device)

    def torch_route():
        top, ids = torch.topk(torch.softmax(logits, dim=-1), k, dim=-1)
        return top / top.sum(dim=-1, keepdim=True), ids

    return Prepared(ours=lambda: moe.route(logits, k), baselines={"torch softmax+topk+renorm": torch_route})


def _plan(t: int, e: int, k: int, device: str) -> Prepared:
    _, ids = moe.route(_logits(t, e, device), k)
    flat = ids.reshape(-1).long()

    def torch_plan():
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=e)
        offsets = torch.cumsum(counts, 0)
        row_of = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=device))
        return order, counts, offsets, row_of

    return Prepared(ours=lambda: moe.plan(ids, e), baselines={"torch argsort+bincount+scatter": torch_plan})


def _move_data(t: int, h: int, dtype: str, device: str):
    weights, ids = moe.route(_logits(t, MOVE_E, device), MOVE_K)
    p = moe.plan(ids, MOVE_E)
    order = torch.argsort(ids.reshape(-1).long(), stable=True)
    token_of_row = order // MOVE_K
    sorted_weights = weights.reshape(-1)[order]
    x = torch.randn(t, h, generator=_gen(device, 2), device=device).to(getattr(torch, dtype))
    return weights, p, order, token_of_row, sorted_weights, x


def _permute(t: int, h: int, dtype: str, device: str, backward: bool) -> Prepared:
    weights, p, order, token_of_row, _, x = _move_data(t, h, dtype, device)
    if backward:  # d permute = combine without weights; Megatron-Core's backward is an index_add_
        grad = torch.randn(p.rows, h, generator=_gen(device, 3), device=device).to(x.dtype)
        xg = x.clone().requires_grad_()

        def ours_backward():
            moe.permute(xg, p).backward(grad)
            xg.grad = None

        def torch_backward():
            xg.index_select(0, token_of_row).backward(grad)
            xg.grad = None

        return Prepared(ours=ours_backward, baselines={"torch index_select backward (index_add_)": torch_backward})
    out = torch.empty(p.rows, h, dtype=x.dtype, device=device)
    reused = torch.empty_like(out)

    return Prepared(ours=lambda: moe.permute(x, p, out=out),
                    baselines={"torch index_select (fresh)": lambda: x.index_select(0, token_of_row),
                               "torch index_select (out=)": lambda: torch.index_select(x, 0, token_of_row, out=reused)})


def _combine(t: int, h: int, dtype: str, device: str, backward: bool) -> Prepared:
    weights, p, order, token_of_row, sorted_weights, x = _move_data(t, h, dtype, device)
    y = moe.permute(x, p)
    if backward:
        grad = torch.randn(t, h, generator=_gen(device, 4), device=device).to(x.dtype)
        yg, wg = y.clone().requires_grad_(), weights.clone().requires_grad_()

        def ours_backward():
            moe.combine(yg, p, wg).backward(grad)
            yg.grad = wg.grad = None

        def torch_backward():  # Megatron-Core's unpermute: weight the sorted rows, index_add_ them back
            sw = wg.reshape(-1)[order]
            out = torch.zeros(t, h, dtype=yg.dtype, device=device).index_add_(0, token_of_row,
                                                                              yg * sw.unsqueeze(1).to(yg.dtype))
            out.backward(grad)
            yg.grad = wg.grad = None

        return Prepared(ours=ours_backward, baselines={"torch index_add_ backward": torch_backward})
    out = torch.empty(t, h, dtype=x.dtype, device=device)
    reused = torch.empty_like(out)
    sw = sorted_weights.unsqueeze(1).to(y.dtype)

    def index_add_fresh():
        return torch.zeros(t, h, dtype=y.dtype, device=device).index_add_(0, token_of_row, y * sw)

    def index_add_reused():
        reused.zero_()
        return reused.index_add_(0, token_of_row, y * sw)

    return Prepared(ours=lambda: moe.combine(y, p, weights, out=out),
                    baselines={"torch index_add_ (fresh)": index_add_fresh,
                               "torch index_add_ (reused out)": index_add_reused})


def cases(device: str = "cpu", quick: bool = False, sizes=None) -> list[Case]:
    out = []
    for t in ROUTE_T:
        for e in ROUTE_E:
            for k in ROUTE_K:
                cols = {"T": str(t), "E": str(e), "k": str(k)}
                params = {"d": t * e, "T": t, "E": e, "k": k}
                out.append(Case(FAMILY, "route", f"commkernels.moe.route(logits, {k})", cols, params,
                                floor_bytes=t * e * 4 + t * k * 8,
                                prepare=lambda t=t, e=e, k=k: _route(t, e, k, device)))
                out.append(Case(FAMILY, "plan", f"commkernels.moe.plan(ids, {e})", cols, params,
                                floor_bytes=t * k * 12 + e * 16,
                                prepare=lambda t=t, e=e, k=k: _plan(t, e, k, device)))
    t = MOVE_T_QUICK if quick else MOVE_T
    hidden = [int(s) for s in sizes] if sizes else list(HIDDEN)
    for h in hidden:
        for dtype in DTYPES:
            size = torch.empty(0, dtype=getattr(torch, dtype)).element_size()
            cols = {"T": str(t), "E": str(MOVE_E), "k": str(MOVE_K), "h": str(h), "dtype": dtype}
            params = {"d": t * h, "T": t, "E": MOVE_E, "k": MOVE_K, "h": h, "dtype": dtype}
            move = t * (MOVE_K + 1) * h * size
            for backward in (False, True):
                suffix = ".backward" if backward else ""
                out.append(Case(FAMILY, "permute" + suffix,
                                "commkernels.moe.permute(x, plan" + (")" if backward else ", out=buf)"), cols, params,
                                floor_bytes=move,
                                prepare=lambda h=h, dtype=dtype, b=backward: _permute(t, h, dtype, device, b)))
                out.append(Case(FAMILY, "combine" + suffix,
                                "commkernels.moe.combine(y, plan, weights" + (")" if backward else ", out=buf)"),
                                cols, params,
                                floor_bytes=t * (2 * MOVE_K + 1) * h * size if backward else move,
                                prepare=lambda h=h, dtype=dtype, b=backward: _combine(t, h, dtype, device, b)))
    return out
