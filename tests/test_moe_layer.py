"""The MoE layer of examples/moe_layer.py on commkernels.moe against the same layer in torch ops only:
same outputs, same gradients, and the same few training steps."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest
import torch

_PATH = pathlib.Path(__file__).resolve().parents[1] / "examples" / "moe_layer.py"
_spec = importlib.util.spec_from_file_location("moe_layer_example", _PATH)
example = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = example
_spec.loader.exec_module(example)


@pytest.mark.parametrize("score, capacity", [("softmax", None), ("sigmoid", None), ("softmax", 40)])
def test_layer_matches_torch_ops(score, capacity):
    torch.manual_seed(0)
    layer = example.MoE(hidden=32, ffn=48, experts=6, k=2, score=score, capacity=capacity)
    x = torch.randn(100, 32, requires_grad=True)
    target = torch.randn(100, 32)
    outputs, grads = [], []
    for forward in (layer.forward, layer.forward_torch):
        layer.zero_grad()
        x.grad = None
        out = forward(x)
        torch.nn.functional.mse_loss(out, target).backward()
        outputs.append(out.detach())
        grads.append([x.grad.clone()] + [p.grad.clone() for p in layer.parameters()])
    if capacity is not None:
        plan = example.moe.plan(example.moe.route(x @ layer.router, 2)[1], 6, capacity=capacity)
        assert (plan.row_of < 0).any()  # the capacity does drop tokens here
    # float32, sums in different orders (index_add_ vs slot-ordered combine): a few ulps of the magnitudes
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)
    for ours, plain in zip(*grads):
        torch.testing.assert_close(ours, plain, rtol=1e-4, atol=1e-6)


def test_training_steps_match():
    g = torch.Generator().manual_seed(3)
    x, target = torch.randn(64, 16, generator=g), torch.randn(64, 16, generator=g)
    ours = example.train(example.MoE(16, 32, 4, 2, seed=5), x, target, 5, 0.1, torch_only=False)
    plain = example.train(example.MoE(16, 32, 4, 2, seed=5), x, target, 5, 0.1, torch_only=True)
    assert ours[-1] < ours[0]
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(plain), rtol=1e-5, atol=0)
