"""The wire format: a compressed message as one uint8 buffer, and back.

Layout (version 1; every integer little-endian)::

    offset  bytes  field
         0      4  magic b"CKWF"
         4      1  format version (1)
         5      1  message kind: 1 = SparseMsg (further kinds take the next ids)
         6      1  value dtype: 1 float32, 2 float64, 3 float16, 4 bfloat16
         7      1  kind-specific code; for SparseMsg the index codec: 0 raw, 1 delta, 2 bitmap
         8      8  size: elements of the dense array the message stands for (uint64)
        16      8  count: elements the message carries (uint64)
        24      8  bytes of section 0 (uint64)
        32      8  bytes of section 1 (uint64)
        40         section 0, then section 1; the buffer ends there (40 + both lengths = its length)

Every kind has two sections. A SparseMsg's section 0 is its values, raw in their dtype (count * itemsize
bytes); section 1 is its indices, encoded with the index codec:

- raw: count uint32 (4 count bytes);
- delta: the first index, then each gap to the previous index (>= 1), as LEB128 varints (7 bits per byte,
  least significant group first, high bit set on every byte but the last; shortest form);
- bitmap: ceil(size / 8) bytes; index i is bit i % 8 (least significant first) of byte i // 8; bits past
  size are zero.

"auto" picks the codec with the fewest bytes (ties: raw, then delta, then bitmap). Planned kinds, each a
new kind id with its own meaning of the code byte and of the two sections: sign bits + scale, QSGD codes +
norms, ternary codes, natural-compression codes.

``unpack`` checks the header and every length against the buffer before it reads anything, and every
decoded index (in [0, size), strictly ascending, varints in shortest form, no stray bitmap bits):
a truncated, overlong or structurally corrupted buffer raises ValueError naming what is wrong, and never
reads out of bounds. There is no checksum: a flipped bit inside the values decodes to another valid
message (the transport's integrity checks cover that).

Frameworks: the buffer is a uint8 array on the CPU in the message's framework (NumPy for CuPy and JAX
messages: JAX arrays are handed back as JAX arrays). A CUDA message (torch or CuPy) is copied to the host
and packed there; ``unpack`` returns a CPU message. pack/unpack are not torch custom ops (unpack's output
dtype depends on the buffer's contents), so under torch.compile they break the graph.
"""

from __future__ import annotations

import struct
import sys

import numpy as np

from .. import _backend, _checks
from ._sparse import SparseMsg

MAGIC = b"CKWF"
VERSION = 1
HEADER = struct.Struct("<4sBBBBQQQQ")
HEADER_BYTES = HEADER.size  # 40
KIND_SPARSE = 1
DTYPE_CODES = {"float32": 1, "float64": 2, "float16": 3, "bfloat16": 4}
DTYPE_NAMES = {code: name for name, code in DTYPE_CODES.items()}
ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}
INDEX_CODECS = {"raw": 0, "delta": 1, "bitmap": 2}
CODEC_NAMES = {code: name for name, code in INDEX_CODECS.items()}
_MAX_SIZE = (1 << 31) - 1
_MAX_VARINT = 5


def _host(a, name: str):
    """a on the CPU, in a framework the CPU module reads (CUDA arrays are copied to the host)."""
    fw = _backend.framework(a, name)
    if _backend.device(a)[0] == "cpu":
        return a
    if fw == "torch":
        return a.detach().cpu()
    return sys.modules["cupy"].asnumpy(a)


def _numpy_view(buf):
    """A NumPy view of a CPU uint8 buffer of any framework (read-only for JAX)."""
    if _backend.is_torch(buf):
        return buf.detach().numpy()
    return np.asarray(buf)


def _check_sparse(msg) -> tuple:
    values, indices, size = msg
    _checks.float_array(values, "msg.values")
    _checks.same_place(values, indices, "msg.values", "msg.indices")
    _checks.contiguous(indices, "msg.indices")
    if _backend.dtype_name(indices) not in _backend.INDEX_DTYPES:
        raise TypeError(f"msg.indices: expected int32 or int64, got {_backend.dtype_name(indices)}")
    k = _backend.numel(values)
    if _backend.numel(indices) != k:
        raise ValueError(f"msg: {k} values but {_backend.numel(indices)} indices")
    size = _checks.integer(size, "msg.size", 0, _MAX_SIZE)
    if k > size:
        raise ValueError(f"msg: {k} values for size {size}")
    return values, indices, size


def _index_bytes(indices, size: int, index_codec: str) -> tuple[int, int]:
    """(codec id, bytes of the encoded indices) for a host message; "auto" picks the smallest."""
    if not isinstance(index_codec, str) or (index_codec not in INDEX_CODECS and index_codec != "auto"):
        raise ValueError(f"index_codec: expected 'auto', 'raw', 'delta' or 'bitmap', got {index_codec!r}")
    k = _backend.numel(indices)
    raw, bitmap = 4 * k, (size + 7) // 8
    if index_codec == "raw":
        return 0, raw
    if index_codec == "bitmap":
        return 2, bitmap
    if index_codec == "auto" and k > bitmap:  # delta spends at least a byte per index
        return min((raw, 0), (bitmap, 2))[::-1]
    delta = _backend.module(indices).delta_varint_nbytes(indices, size)
    if index_codec == "delta":
        return 1, delta
    return min((raw, 0), (delta, 1), (bitmap, 2))[::-1]


def nbytes(msg, index_codec: str = "auto") -> int:
    """The exact length of ``pack(msg, index_codec)`` (also ``msg.nbytes`` for the default codec).

    For the delta codec (and "auto") this is one pass over the indices; a CUDA message's indices are
    copied to the host for it.
    """
    if not isinstance(msg, SparseMsg):
        raise TypeError(f"msg: expected a SparseMsg, got {type(msg).__name__}")
    values, indices, size = _check_sparse(msg)
    _, index_bytes = _index_bytes(_host(indices, "msg.indices"), size, index_codec)
    return HEADER_BYTES + _backend.numel(values) * ITEMSIZE[_backend.dtype_name(values)] + index_bytes


def pack(msg, index_codec: str = "auto"):
    """``msg`` as one uint8 buffer (layout in this module's docstring); ``unpack`` inverts it exactly.

    msg: a SparseMsg (indices int32 or int64, strictly ascending, in [0, size): ValueError otherwise).
    index_codec: "auto" (the smallest), "raw", "delta" or "bitmap".
    Returns a 1-D uint8 array on the CPU: a torch tensor for torch messages, a NumPy array for NumPy and
    CuPy ones, a JAX array for JAX ones. CUDA messages are copied to the host first.
    """
    if not isinstance(msg, SparseMsg):
        raise TypeError(f"msg: expected a SparseMsg (the only message kind so far), got {type(msg).__name__}")
    values, indices, size = _check_sparse(msg)
    values, indices = _host(values, "msg.values"), _host(indices, "msg.indices")
    dtype = _backend.dtype_name(values)
    k = _backend.numel(values)
    codec, index_bytes = _index_bytes(indices, size, index_codec)
    value_bytes = k * ITEMSIZE[dtype]
    buf = _backend.empty(values, HEADER_BYTES + value_bytes + index_bytes, "uint8")
    view = _numpy_view(buf)
    view[:HEADER_BYTES] = np.frombuffer(
        HEADER.pack(MAGIC, VERSION, KIND_SPARSE, DTYPE_CODES[dtype], codec, size, k, value_bytes, index_bytes),
        dtype=np.uint8)
    if _backend.framework(values, "msg.values") == "jax":
        values, indices = np.asarray(values), np.asarray(indices)
    if isinstance(values, np.ndarray) and dtype == "bfloat16":  # ml_dtypes' bfloat16: the same bytes, no math
        values = values.view(np.float16)
    _backend.module(values).encode_sparse(values.reshape(-1), indices.reshape(-1), size, codec, buf[HEADER_BYTES:])
    return _backend.finish(msg.values, buf)


def _header(view: np.ndarray) -> tuple:
    n = view.size
    if n < HEADER_BYTES:
        raise ValueError(f"buf: truncated ({n} bytes; the header alone has {HEADER_BYTES})")
    magic, version, kind, dtype_code, code, size, count, len0, len1 = HEADER.unpack(view[:HEADER_BYTES].tobytes())
    if magic != MAGIC:
        raise ValueError(f"buf: not a commkernels message (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise ValueError(f"buf: unsupported format version {version} (this build reads version {VERSION})")
    if kind not in _DECODERS:
        raise ValueError(f"buf: unknown message kind {kind} (known: {sorted(_DECODERS)})")
    if len0 > n or len1 > n or HEADER_BYTES + len0 + len1 > n:
        raise ValueError(f"buf: truncated ({n} bytes; the header announces {HEADER_BYTES} + {len0} + {len1})")
    if HEADER_BYTES + len0 + len1 < n:
        raise ValueError(f"buf: {n - HEADER_BYTES - len0 - len1} bytes past the end of the message")
    return kind, dtype_code, code, size, count, len0, len1


def _decode_sparse(buf, view, dtype_code: int, code: int, size: int, count: int, len0: int, len1: int):
    if dtype_code not in DTYPE_NAMES:
        raise ValueError(f"buf: corrupted header (value dtype code {dtype_code}; known: {sorted(DTYPE_NAMES)})")
    if code not in CODEC_NAMES:
        raise ValueError(f"buf: corrupted header (index codec {code}; known: {sorted(CODEC_NAMES)})")
    if size > _MAX_SIZE:
        raise ValueError(f"buf: corrupted header (size {size} > 2^31 - 1)")
    if count > size:
        raise ValueError(f"buf: corrupted header (count {count} > size {size})")
    dtype = DTYPE_NAMES[dtype_code]
    if len0 != count * ITEMSIZE[dtype]:
        raise ValueError(f"buf: corrupted header ({len0} value bytes for {count} {dtype} values)")
    expected = {0: (4 * count, 4 * count), 1: (count, _MAX_VARINT * count), 2: ((size + 7) // 8, (size + 7) // 8)}[code]
    if not expected[0] <= len1 <= expected[1]:
        raise ValueError(f"buf: corrupted header ({len1} index bytes for {count} {CODEC_NAMES[code]} indices "
                         f"of size {size})")
    fw = _backend.framework(buf, "buf")
    numpy_bf16 = dtype == "bfloat16" and fw in ("numpy", "jax")
    if numpy_bf16:
        try:
            import ml_dtypes
        except ImportError:
            raise TypeError("buf: a bfloat16 message needs ml_dtypes to come out as a NumPy array "
                            "(pip install ml_dtypes), or unpack torch.from_numpy(buf)") from None
    values = _backend.empty(buf, count, "float16" if numpy_bf16 else dtype)  # float16: same bytes, no math
    indices = _backend.empty(buf, count, "int32")
    payload = view[HEADER_BYTES:] if fw == "jax" else buf.reshape(-1)[HEADER_BYTES:]
    _backend.module(values).decode_sparse(payload, size, code, values, indices)
    if numpy_bf16:
        values = values.view(ml_dtypes.bfloat16)
        if fw == "jax":
            import jax.numpy as jnp

            return SparseMsg(jnp.asarray(values), _backend.finish(buf, indices), size)
    return SparseMsg(_backend.finish(buf, values), _backend.finish(buf, indices), size)


_DECODERS = {KIND_SPARSE: _decode_sparse}


def unpack(buf):
    """The message that ``pack`` turned into ``buf``, exactly (bit for bit; indices come back int32).

    buf: a contiguous uint8 array on the CPU (NumPy, torch, JAX). Raises ValueError for a buffer that is
    truncated, has trailing bytes, or whose header or index payload is corrupted (see the module
    docstring). The message's arrays are in buf's framework, on the CPU.
    """
    fw = _backend.framework(buf, "buf")
    if _backend.dtype_name(buf) != "uint8":
        raise TypeError(f"buf: expected a uint8 array, got {_backend.dtype_name(buf)}")
    if _backend.device(buf)[0] != "cpu":
        raise TypeError(f"buf: expected a buffer on the CPU, got one on {_backend.device(buf)}")
    _checks.contiguous(buf, "buf")
    del fw
    view = _numpy_view(buf).reshape(-1)
    kind, dtype_code, code, size, count, len0, len1 = _header(view)
    return _DECODERS[kind](buf, view, dtype_code, code, size, count, len0, len1)


SparseMsg.nbytes = property(nbytes, doc="The exact length of pack(msg): the header plus values plus indices "
                                        "in the smallest index codec.")
