"""The CommFormer-style example (examples/commformer.py): a few training steps on the relay task lower the
loss, and the learnable edge logits receive gradient through graph_attention's edge bias."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import torch

_PATH = pathlib.Path(__file__).resolve().parents[1] / "examples" / "commformer.py"
_spec = importlib.util.spec_from_file_location("commformer_example", _PATH)
commformer = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = commformer
_spec.loader.exec_module(commformer)


def test_training_lowers_the_loss_and_trains_the_graph():
    model, partner, losses, grad_norms = commformer.train(agents=6, obs_dim=3, k=2, steps=60, batch=32, seed=1)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert all(g > 0 for g in grad_norms)  # every step's loss reaches the edge logits
    assert float(model.edge_logits.detach().std()) > 0  # and they moved away from their equal start


def test_edge_logits_get_gradient_off_the_diagonal():
    """One backward through graph_attention's edge bias reaches the logits; self edges are never candidates."""
    torch.manual_seed(0)
    model = commformer.CommFormer(5, 3, k=2)
    obs = torch.randn(4, 5, 3)
    model(obs).square().sum().backward()
    grad = model.edge_logits.grad
    assert grad.abs().sum() > 0
    assert torch.all(grad.diagonal() == 0)  # self edges are never candidates
