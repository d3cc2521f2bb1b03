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
from ._ef21 import ef21_topk_  # noqa: E402
from ._powersgd import orthogonalize_, powersgd_compress_, powersgd_decompress  # noqa: E402
from ._server import ServerCompressor  # noqa: E402

__all__ += ["ef21_topk_", "orthogonalize_", "powersgd_compress_", "powersgd_decompress", "ServerCompressor"]
