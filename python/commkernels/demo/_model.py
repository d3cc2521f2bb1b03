"""The demo's classifier: a small mixture-of-experts network on commkernels.moe, as a function of one flat
parameter vector (so that compression, aggregation and gossip act on that vector directly).

logits = (z + MoE(z)) W_out + b_out, z = relu(x W_in + b_in); MoE(z) = combine(experts(permute(z, plan)),
plan, weights) with (weights, ids) = moe.route(z W_router, k) (softmax, renormalised over the k) and
plan = moe.plan(ids, E); expert e is relu(rows W1[e]) W2[e]. Every step is differentiable (the moe ops
have autograd formulas), so torch.autograd gives the gradient of the flat vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import moe


@dataclass(frozen=True)
class Shapes:
    features: int
    classes: int
    hidden: int = 32
    ffn: int = 32
    experts: int = 4
    k: int = 2

    def layout(self) -> list[tuple[str, tuple[int, ...]]]:
        h, E = self.hidden, self.experts
        return [("w_in", (self.features, h)), ("b_in", (h,)), ("router", (h, E)),
                ("w1", (E, h, self.ffn)), ("w2", (E, self.ffn, h)), ("w_out", (h, self.classes)),
                ("b_out", (self.classes,))]

    @property
    def size(self) -> int:
        return sum(math.prod(s) for _, s in self.layout())


def unflatten(theta: torch.Tensor, shapes: Shapes) -> dict:
    out, at = {}, 0
    for name, shape in shapes.layout():
        n = math.prod(shape)
        out[name] = theta[at:at + n].view(shape)
        at += n
    return out


def init(shapes: Shapes, seed: int) -> torch.Tensor:
    """The initial flat parameters (the same for every agent): scaled Gaussian weights, zero biases."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for name, shape in shapes.layout():
        if name.startswith("b_"):
            parts.append(torch.zeros(shape))
        else:
            fan_in = shape[-2]
            parts.append(torch.randn(shape, generator=g) / math.sqrt(fan_in))
    return torch.cat([p.reshape(-1) for p in parts])


def forward(theta: torch.Tensor, x: torch.Tensor, shapes: Shapes) -> torch.Tensor:
    p = unflatten(theta, shapes)
    z = torch.relu(x @ p["w_in"] + p["b_in"])
    weights, ids = moe.route(z @ p["router"], shapes.k, score="softmax")
    plan = moe.plan(ids, shapes.experts)
    rows = moe.permute(z.contiguous(), plan)
    offsets = plan.offsets.tolist()
    outs = [torch.relu(rows[offsets[e]:offsets[e + 1]] @ p["w1"][e]) @ p["w2"][e] for e in range(shapes.experts)]
    y = moe.combine(torch.cat(outs).contiguous(), plan, weights)
    return (z + y) @ p["w_out"] + p["b_out"]


def sgd_steps(theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor, shapes: Shapes, steps: int, batch: int,
              lr: float, gen: torch.Generator) -> torch.Tensor:
    """`steps` steps of minibatch SGD on the cross-entropy from theta; minibatches drawn from gen."""
    theta = theta.detach()
    for _ in range(steps):
        idx = torch.randint(0, X.shape[0], (min(batch, X.shape[0]),), generator=gen)
        t = theta.requires_grad_()
        loss = torch.nn.functional.cross_entropy(forward(t, X[idx], shapes), y[idx])
        (grad,) = torch.autograd.grad(loss, t)
        theta = (t.detach() - lr * grad).detach()
    return theta


@torch.no_grad()
def correct(theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor, shapes: Shapes) -> int:
    """How many of the samples theta classifies correctly (non-finite parameters classify nothing)."""
    if not bool(torch.isfinite(theta).all()):
        return 0
    return int((forward(theta, X, shapes).argmax(1) == y).sum())
