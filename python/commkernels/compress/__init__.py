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

from ._quantize import (NaturalMsg, QsgdMsg, SignMsg, TernMsg, natural_compress, natural_compress_ef_,
                        natural_decompress, qsgd, qsgd_code_bits, qsgd_decompress, qsgd_ef_, sign_compress,
                        sign_compress_ef_, sign_decompress, stochastic_round, terngrad, terngrad_decompress,
                        terngrad_ef_)

__all__ += ["SignMsg", "TernMsg", "QsgdMsg", "NaturalMsg", "sign_compress", "sign_compress_ef_", "sign_decompress",
            "terngrad", "terngrad_ef_", "terngrad_decompress", "qsgd", "qsgd_ef_", "qsgd_decompress",
            "qsgd_code_bits", "natural_compress", "natural_compress_ef_", "natural_decompress", "stochastic_round"]
