"""Gradient compression: what a worker sends, and the exact decompression of it.

Semantics are those of ``shared/specs/compress.md``; the executable specification is
``commkernels.reference.compress``. Every function takes NumPy arrays, torch tensors (through the
``commkernels::<name>`` custom ops), CuPy arrays or (CPU) JAX arrays, and returns arrays of the same
framework on the same device. Arrays of any shape are compressed as their flattened (C-order) view; they
must be contiguous.

One module per kind of message: ``_sparse`` (top-k, rand-k).
"""

from ._sparse import SparseMsg, decompress, ef_topk_, randk, randk_indices, topk

__all__ = ["SparseMsg", "decompress", "topk", "ef_topk_", "randk", "randk_indices"]
from ._wire import nbytes, pack, unpack

__all__ += ["pack", "unpack", "nbytes"]
from ._aggregate import sparse_aggregate

__all__ += ["sparse_aggregate"]
from ._threshold import estimate_threshold, threshold

__all__ += ["threshold", "estimate_threshold"]
