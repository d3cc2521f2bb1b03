"""Mixture-of-experts routing: score and select experts, plan, permute and combine tokens.

Semantics are those of ``shared/specs/moe.md``; the executable specification is ``commkernels.reference.moe``.
Functions take NumPy arrays, torch tensors (through the ``commkernels::moe_*`` custom ops, with autograd),
CuPy arrays or (CPU) JAX arrays, and return arrays of the same framework on the same device.

Modules: ``_route`` (route), ``_dispatch`` (plan, permute, combine).
"""

from ._dispatch import Plan, combine, num_rows, permute, plan
from ._route import route

__all__ = ["route", "Plan", "plan", "num_rows", "permute", "combine"]
"""Mixture-of-experts routing (shared/specs/moe.md).

This part: expert capacity (``capacity``), the balancing losses (``load_balancing_loss``, ``z_loss``),
aux-loss-free bias balancing (``update_expert_bias_``) and expert-choice routing (``expert_choice``).
Every array function takes NumPy arrays, torch tensors (through ``commkernels::<name>`` custom ops, with
autograd where differentiable), CuPy arrays or (CPU) JAX arrays and returns the caller's framework.
"""

from ._balance import capacity, load_balancing_loss, update_expert_bias_, z_loss
from ._expert_choice import ExpertChoice, expert_choice

__all__ = ["capacity", "load_balancing_loss", "z_loss", "update_expert_bias_", "ExpertChoice", "expert_choice"]
