"""Mixture-of-experts routing: score and select experts, plan, permute and combine tokens.

Semantics are those of ``shared/specs/moe.md``; the executable specification is ``commkernels.reference.moe``.
Functions take NumPy arrays, torch tensors (through the ``commkernels::moe_*`` custom ops, with autograd),
CuPy arrays or (CPU) JAX arrays, and return arrays of the same framework on the same device.

Modules: ``_route`` (route), ``_dispatch`` (plan, permute, combine).
"""

from ._dispatch import Plan, combine, num_rows, permute, plan
from ._route import route

__all__ = ["route", "Plan", "plan", "num_rows", "permute", "combine"]
