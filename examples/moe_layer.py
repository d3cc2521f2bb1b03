"""A mixture-of-experts feed-forward layer on commkernels.moe, and the same layer in plain torch ops.

MoE.forward: router logits -> moe.route (top-k weights and ids) -> moe.plan (expert-sorted rows) ->
moe.permute (tokens into those rows) -> the experts (a loop over the experts' row ranges, or, with a
capacity, one batched matmul over the [E, C, h] layout) -> moe.combine (weighted sum back per token).
MoE.forward_torch is the same computation with torch ops only (softmax / sigmoid + topk + renormalise,
a boolean mask per expert, index_add_), as the reference for outputs and gradients.

The experts are two-layer ReLU MLPs without biases (so a zero padding row stays zero). Training: a few
steps of SGD on a random regression target, both paths from the same initial weights.

Run: python examples/moe_layer.py
"""

from __future__ import annotations

import argparse

import torch

from commkernels import moe


class MoE(torch.nn.Module):
    def __init__(self, hidden: int, ffn: int, experts: int, k: int, score: str = "softmax",
                 capacity: int | None = None, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.experts, self.k, self.score, self.capacity = experts, k, score, capacity
        self.router = torch.nn.Parameter(torch.randn(hidden, experts, generator=g) / hidden**0.5)
        self.w1 = torch.nn.Parameter(torch.randn(experts, hidden, ffn, generator=g) / hidden**0.5)
        self.w2 = torch.nn.Parameter(torch.randn(experts, ffn, hidden, generator=g) / ffn**0.5)

    def expert(self, e: int, rows: torch.Tensor) -> torch.Tensor:
        return torch.relu(rows @ self.w1[e]) @ self.w2[e]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, ids = moe.route(x @ self.router, self.k, score=self.score)
        plan = moe.plan(ids, self.experts, capacity=self.capacity)
        rows = moe.permute(x, plan)
        if self.capacity is None:  # a loop over the experts' row ranges (offsets read back once)
            offsets = plan.offsets.tolist()
            out = torch.cat([self.expert(e, rows[offsets[e]:offsets[e + 1]]) for e in range(self.experts)])
        else:  # the [E, C, h] layout: one batched matmul per layer
            c = rows.shape[0] // self.experts
            batched = rows.view(self.experts, c, -1)
            out = torch.bmm(torch.relu(torch.bmm(batched, self.w1)), self.w2).reshape(rows.shape[0], -1)
        return moe.combine(out, plan, weights)

    def forward_torch(self, x: torch.Tensor) -> torch.Tensor:
        logits = (x @ self.router).float()
        scores = torch.softmax(logits, dim=-1) if self.score == "softmax" else torch.sigmoid(logits)
        top, ids = torch.topk(scores, self.k, dim=-1)
        weights = top / top.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(x)
        for e in range(self.experts):
            token, slot = (ids == e).nonzero(as_tuple=True)  # token order, as moe.plan
            if self.capacity is not None:
                token, slot = token[:self.capacity], slot[:self.capacity]
            y = self.expert(e, x[token]) * weights[token, slot, None].to(x.dtype)
            out = out.index_add(0, token, y)
        return out


def train(layer: MoE, x: torch.Tensor, target: torch.Tensor, steps: int, lr: float, torch_only: bool) -> list[float]:
    opt = torch.optim.SGD(layer.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        out = layer.forward_torch(x) if torch_only else layer(x)
        loss = torch.nn.functional.mse_loss(out, target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.tokens, args.hidden, generator=g)
    target = torch.randn(args.tokens, args.hidden, generator=g)
    ours = train(MoE(args.hidden, 2 * args.hidden, args.experts, args.k), x, target, args.steps, 0.1, False)
    plain = train(MoE(args.hidden, 2 * args.hidden, args.experts, args.k), x, target, args.steps, 0.1, True)
    for step, (a, b) in enumerate(zip(ours, plain)):
        print(f"step {step:3d}  loss commkernels {a:.6f}  torch {b:.6f}")


if __name__ == "__main__":
    main()
