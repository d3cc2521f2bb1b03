"""A TorchDispatchMode that records the name of every op dispatched under it: the eager-path tests use it
to check that calls which must go through a commkernels op (under a mode, with autograd) still do."""

from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode


class Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))
