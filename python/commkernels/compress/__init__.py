"""Gradient compression: what a worker sends, and the exact decompression of it.

Semantics are those of ``shared/specs/compress.md``; the executable specification is
``commkernels.reference``. Every function takes NumPy arrays, torch tensors (through the
``commkernels::<name>`` custom ops), CuPy arrays or (CPU) JAX arrays, and returns arrays of the same
framework on the same device. Arrays of any shape are compressed as their flattened (C-order) view; they
must be contiguous.

Modules: ``_sparse`` (top-k, rand-k), ``_threshold`` (threshold selection), ``_quantize`` (sign,
TernGrad, QSGD, natural compression, stochastic rounding), ``_wire`` (pack/unpack), ``_aggregate``
(sparse aggregation), ``_ef21`` (EF21), ``_server`` (server-side recompression), ``_powersgd`` (PowerSGD
building blocks).
"""

from ._aggregate import sparse_aggregate
from ._ef21 import ef21_topk_
from ._powersgd import orthogonalize_, powersgd_compress_, powersgd_decompress
from ._quantize import (NaturalMsg, QsgdMsg, SignMsg, TernMsg, natural_compress, natural_compress_ef_,
                        natural_decompress, qsgd, qsgd_code_bits, qsgd_decompress, qsgd_ef_, sign_compress,
                        sign_compress_ef_, sign_decompress, stochastic_round, terngrad, terngrad_decompress,
                        terngrad_ef_)
from ._server import ServerCompressor
from ._sparse import SparseMsg, decompress, ef_topk_, randk, randk_indices, topk
from ._threshold import estimate_threshold, threshold
from ._wire import nbytes, pack, unpack

__all__ = [
    "SparseMsg", "decompress", "topk", "ef_topk_", "randk", "randk_indices",
    "threshold", "estimate_threshold",
    "SignMsg", "sign_compress", "sign_compress_ef_", "sign_decompress",
    "TernMsg", "terngrad", "terngrad_ef_", "terngrad_decompress",
    "QsgdMsg", "qsgd", "qsgd_ef_", "qsgd_decompress", "qsgd_code_bits",
    "NaturalMsg", "natural_compress", "natural_compress_ef_", "natural_decompress",
    "stochastic_round",
    "pack", "unpack", "nbytes",
    "sparse_aggregate",
    "ef21_topk_", "ServerCompressor",
    "orthogonalize_", "powersgd_compress_", "powersgd_decompress",
]
