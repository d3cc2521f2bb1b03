"""moe_balance cases: the load-balancing loss, the z-loss and expert choice against eager torch composites.

Router logits are standard normals (float32 torch tensors), T in {512, 8192} tokens, E in {8, 64, 256}
experts; probs = softmax(logits), ids = each token's top-k experts (k = 2 at E = 8, else 8), int64 as
torch.topk gives them. Baselines, as the anchor libraries write them: Megatron-Core's
switch_load_balancing_loss_func (bincount of the ids; also GShard/DeepSpeed's one_hot + mean), its
z_loss_func (torch.logsumexp), and expert choice as the paper's pseudo-code (softmax over experts, then
torch.topk over the tokens of each expert). Expert choice's capacity is T * 2 / E (capacity factor 2,
the paper's default). Floors: one read of the [T, E] matrix (and of the ids), plus the [E, C] outputs.
"""

from __future__ import annotations

import torch

from .. import moe
from .harness import Case, Prepared

FAMILY = "moe_balance"
TOKENS = (512, 8192)
EXPERTS = (8, 64, 256)
SEED = 20240607


def _logits(T: int, E: int, device: str) -> torch.Tensor:
    generator = torch.Generator(device=device).manual_seed(SEED + T + E)
    return torch.randn(T, E, generator=generator, device=device)


def _k(E: int) -> int:
    return 2 if E == 8 else 8


def _lbl(T: int, E: int, device: str) -> Prepared:
    logits = _logits(T, E, device)
    probs = torch.softmax(logits, dim=1)
    k = _k(E)
    ids = torch.topk(logits, k, dim=1).indices

    def megatron_bincount():
        tokens_per_expert = torch.bincount(ids.reshape(-1), minlength=E)
        return torch.sum(probs.sum(dim=0) * tokens_per_expert) * (E / (T * T * k))

    def one_hot_mean():
        f = torch.nn.functional.one_hot(ids, E).sum(dim=1).float().mean(dim=0) / k
        return E * torch.sum(f * probs.mean(dim=0))

    return Prepared(ours=lambda: moe.load_balancing_loss(probs, ids),
                    baselines={"torch bincount + sum (Megatron)": megatron_bincount,
                               "torch one_hot + mean": one_hot_mean})


def _z(T: int, E: int, device: str) -> Prepared:
    logits = _logits(T, E, device)
    return Prepared(ours=lambda: moe.z_loss(logits),
                    baselines={"torch.logsumexp (Megatron)": lambda: torch.mean(torch.square(torch.logsumexp(logits, dim=-1)))})


def _capacity(T: int, E: int) -> int:
    return moe.capacity(T, 1, E, 2.0)


def _expert_choice(T: int, E: int, device: str) -> Prepared:
    logits = _logits(T, E, device)
    C = _capacity(T, E)

    def softmax_topk():
        return torch.topk(torch.softmax(logits, dim=1).t(), C, dim=1)

    return Prepared(ours=lambda: moe.expert_choice(logits, C), baselines={"torch softmax + topk over tokens": softmax_topk})


KERNELS = {
    "load_balancing_loss": ("commkernels.moe.load_balancing_loss(probs, ids)", _lbl,
                            lambda T, E: 4 * T * E + 8 * T * _k(E)),
    "z_loss": ("commkernels.moe.z_loss(logits)", _z, lambda T, E: 4 * T * E),
    "expert_choice": ("commkernels.moe.expert_choice(logits, capacity)", _expert_choice,
                      lambda T, E: 4 * T * E + 8 * E * _capacity(T, E)),
}


def _case(kernel: str, T: int, E: int, device: str) -> Case:
    ours, prepare, floor = KERNELS[kernel]
    columns = {"T": str(T), "E": str(E), "dtype": "float32"}
    params = {"d": T * E, "T": T, "E": E, "dtype": "float32"}
    if kernel == "load_balancing_loss":
        columns["k"] = params["k"] = _k(E)
        columns["k"] = str(_k(E))
    if kernel == "expert_choice":
        params["capacity"] = _capacity(T, E)
        columns["capacity"] = str(params["capacity"])
    return Case(family=FAMILY, kernel=kernel, ours=ours, columns=columns, params=params, floor_bytes=floor(T, E),
                prepare=lambda: prepare(T, E, device))


def cases(device: str = "cpu", quick: bool = False, sizes=None) -> list[Case]:
    """sizes, when given, are token counts T (the experts stay {8, 64, 256})."""
    tokens = [int(s) for s in sizes] if sizes else list(TOKENS)
    return [_case(kernel, T, E, device) for kernel in KERNELS for T in tokens for E in EXPERTS]
