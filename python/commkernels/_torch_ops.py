"""torch.library custom ops: how torch tensors reach the kernels.

Each family registers its ops here with `define`: the kernel function (framework-generic, see
_backend.py), a fake implementation for tracing, and where the op is differentiable an autograd formula.
The ops are named ``commkernels::<name>``, so ``torch.library.opcheck`` and
``torch.compile(fullgraph=True)`` see them as single opaque nodes.
"""

from __future__ import annotations

import importlib.util

torch = None
if importlib.util.find_spec("torch") is not None:
    import torch

_UINT64 = 1 << 64


def available() -> bool:
    return torch is not None


def define(name: str, schema: str, kernel, fake, mutates_args=(), backward=None, setup_context=None):
    """Registers commkernels::<name> with the given schema; returns the op (None without torch)."""
    if torch is None:
        return None
    op = torch.library.custom_op(f"commkernels::{name}", kernel, mutates_args=mutates_args, schema=schema)
    op.register_fake(fake)
    if backward is not None:
        op.register_autograd(backward, setup_context=setup_context)
    return op


# A torch schema int is int64; seeds and steps are uint64. They travel as the int64 with the same bits.
def to_int64(value: int) -> int:
    return value - _UINT64 if value >= _UINT64 // 2 else value


def to_uint64(value: int) -> int:
    return value % _UINT64
