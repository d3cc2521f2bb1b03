"""The input layer of commkernels.aggregate: the n workers' updates, read without stacking them.

Design (every aggregation rule goes through here; csrc/aggregate/rows.h is the C++ side):

- ``X`` is either one array of shape (n, *shape) (row i is worker i's update) or a list/tuple of n arrays
  of one shape. NumPy, torch, CuPy or (CPU) JAX; all parts in one framework, on one device, of one float
  dtype (float32, float64, float16, bfloat16), each C-contiguous. Nothing is copied: a non-contiguous
  part is refused (ValueError), never silently made contiguous.
- ``updates(X)`` checks all that and returns an ``Updates``: ``n``, ``shape`` (one update's shape),
  ``d`` (its number of elements), ``dtype``, ``framework``, ``device``, ``like`` (an array to allocate
  outputs beside), ``stacked`` (whether X was one array) and ``parts``, the list handed to the kernels:
  ``[X]`` for a stacked X, else the n arrays themselves (JAX arrays as zero-copy NumPy views). A kernel
  binding takes ``(parts, n)`` and builds the C++ ``Rows`` view (n row pointers) from them.
- ``Updates.rows()`` gives the n rows as arrays (views) for Python-level composites; ``Updates.subset``
  picks workers (e.g. Krum's selection) as a new ``Updates`` whose parts are the chosen rows: still no copy.
- ``output(u)`` allocates the result (the update's shape, X's framework/device/dtype) and ``finish``
  hands it back (JAX: as a JAX array).
- ``check_f(rule, n, f, ...)`` validates f and names the violated bound, e.g.
  "trimmed_mean: needs n > 2f, got n=4, f=2".

For the torch custom ops, a rule's op takes ``Tensor[] X`` (the parts) and ``bool stacked``; ``from_parts``
rebuilds the ``Updates`` inside the op (the checks already ran outside it).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _backend, _checks, _eager

@dataclass(frozen=True)
class Updates:
    parts: list  # what the kernels take with n: [X] when stacked, else the n row arrays
    n: int  # number of workers
    shape: tuple  # one update's shape
    d: int  # elements per update
    dtype: str  # "float32", "float64", "float16" or "bfloat16"
    framework: str  # "numpy", "torch", "cupy" or "jax"
    device: tuple  # ("cpu", 0) or ("cuda", index)
    like: Any  # the user's first array: outputs are allocated beside it
    stacked: bool  # X was one (n, *shape) array

    def module(self):
        """The compiled module (CPU or CUDA) for these arrays."""
        return _backend.module(self.like)

    def stream(self) -> int:
        return _backend.stream(self.like)

    def through_op(self) -> bool:
        """Whether a rule goes through its torch op: torch tensors, except plain CPU or CUDA ones in eager mode
        that autograd does not track, where the op would only call the kernel (see _eager: the dispatcher
        and autograd wrapper cost ~0.05-0.1 ms a call, a rule's whole budget at small d)."""
        return self.framework == "torch" and not _eager.plain(*self.parts, differentiable=self.parts)

    def rows(self) -> list:
        """The n updates as arrays of ``shape`` (views, no copy)."""
        if self.stacked:
            x = self.parts[0]
            return [x[i] for i in range(self.n)]
        return list(self.parts)

    def subset(self, index) -> "Updates":
        """The workers in ``index`` (a sequence of ints in [0, n), repeats allowed), as an Updates over
        the same memory."""
        rows = self.rows()
        picked = [rows[int(i)] for i in index]
        if not picked:
            raise ValueError("index: expected at least one worker")
        return Updates(picked, len(picked), self.shape, self.d, self.dtype, self.framework, self.device,
                       self.like, False)


def _shape(a) -> tuple:
    return tuple(int(s) for s in a.shape)


def _part(a, name: str) -> Any:
    """NumPy views of JAX arrays (read zero-copy); other frameworks as they are."""
    if _backend.framework(a, name) == "jax":
        return np.asarray(a)
    return a


def updates(X, name: str = "X") -> Updates:
    """Checks X (see the module docstring) and returns its Updates; TypeError/ValueError naming ``name``."""
    if isinstance(X, (list, tuple)):
        if len(X) == 0:
            raise ValueError(f"{name}: expected at least one update, got an empty {type(X).__name__}")
        first = X[0]
        fw = _checks.float_array(first, f"{name}[0]")
        dtype, device, shape = _backend.dtype_name(first), _backend.device(first), _shape(first)
        for i, a in enumerate(X):
            if i == 0:
                continue
            item = f"{name}[{i}]"
            fw_i = _backend.framework(a, item)
            if fw_i != fw:
                raise TypeError(f"{item}: expected a {fw} array like {name}[0], got {fw_i}")
            if _backend.device(a) != device:
                raise TypeError(f"{item}: expected an array on {name}[0]'s device {device}, got {_backend.device(a)}")
            if _backend.dtype_name(a) != dtype:
                raise TypeError(f"{item}: expected dtype {dtype} like {name}[0], got {_backend.dtype_name(a)}")
            if _shape(a) != shape:
                raise ValueError(f"{item}: expected shape {shape} like {name}[0], got {_shape(a)}")
            _checks.contiguous(a, item)
        d = math.prod(shape)
        parts = [_part(a, name) for a in X]
        return Updates(parts, len(X), shape, d, dtype, fw, device, first, False)
    fw = _checks.float_array(X, name)
    shape = _shape(X)
    if len(shape) == 0:
        raise ValueError(f"{name}: expected an (n, ...) array of n updates or a list of arrays, got a 0-d array")
    n = shape[0]
    if n == 0:
        raise ValueError(f"{name}: expected at least one update, got an array of shape {shape}")
    d = math.prod(shape[1:])
    return Updates([_part(X, name)], n, shape[1:], d, _backend.dtype_name(X), fw, _backend.device(X), X, True)


def from_parts(parts, stacked: bool) -> Updates:
    """The Updates of a torch op's (parts, stacked) arguments (already checked by the public function)."""
    first = parts[0]
    if stacked:
        shape = _shape(first)
        n, shape = shape[0], shape[1:]
    else:
        n, shape = len(parts), _shape(first)
    d = math.prod(shape)
    return Updates(list(parts), n, shape, d, _backend.dtype_name(first), _backend.framework(first, "X"),
                   _backend.device(first), first, stacked)


def output(u: Updates, dtype: str | None = None):
    """A new flat array of d elements for u's result (u's framework, device, dtype unless given; a large
    CPU torch result in u's dtype from the host buffer cache, see _backend.output_buffer)."""
    if dtype is None or dtype == u.dtype:
        return _backend.output_buffer(u.like, u.d)
    return _backend.empty(u.like, u.d, dtype)


def finish(u: Updates, out):
    """The flat result buffer as an array of the update's shape, in the caller's framework."""
    return _backend.finish(u.like, out).reshape(u.shape)


def check_f(rule: str, n: int, f, bound: str = "n > 2f") -> int:
    """f as an int >= 0 such that `bound` holds (one of "n > 2f", "n >= 2f+3", "n >= 4f+3", "n > f");
    ValueError naming the rule and the violated bound."""
    if isinstance(f, bool) or not isinstance(f, numbers.Integral):
        raise TypeError(f"f: expected an int, got {type(f).__name__}")
    f = int(f)
    if f < 0:
        raise ValueError(f"f: expected f >= 0, got {f}")
    ok = {"n > 2f": n > 2 * f, "n >= 2f+3": n >= 2 * f + 3, "n >= 4f+3": n >= 4 * f + 3, "n > f": n > f}
    if bound not in ok:
        raise ValueError(f"unknown bound {bound!r}")
    if not ok[bound]:
        raise ValueError(f"{rule}: needs {bound}, got n={n}, f={f}")
    return f
