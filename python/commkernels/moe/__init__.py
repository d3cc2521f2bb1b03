"""Mixture-of-experts routing: score and select experts, plan, permute and combine tokens, size expert
capacity, balance the load.

Semantics are those of ``shared/specs/moe.md``; the executable specifications are ``commkernels.reference.moe``
and ``commkernels.reference.moe_balance``. Functions take NumPy arrays, torch tensors (through
``commkernels::<name>`` custom ops, with autograd where differentiable), CuPy arrays or (CPU) JAX arrays, and
return arrays of the same framework on the same device.

Modules: ``_route`` (route), ``_dispatch`` (plan, permute, combine), ``_balance`` (capacity, the balancing
losses, aux-loss-free bias balancing), ``_expert_choice`` (expert-choice routing).
"""

from ._balance import capacity, load_balancing_loss, update_expert_bias_, z_loss
from ._dispatch import Plan, combine, num_rows, permute, plan, release_cached_memory
from ._expert_choice import ExpertChoice, expert_choice
from ._route import route

__all__ = ["route", "Plan", "plan", "num_rows", "permute", "combine", "capacity", "load_balancing_loss", "z_loss",
           "update_expert_bias_", "ExpertChoice", "expert_choice", "release_cached_memory"]
