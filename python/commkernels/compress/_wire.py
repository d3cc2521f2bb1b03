"""The wire format: a compressed message as one uint8 buffer, and back.

Layout (version 1; every integer little-endian)::

    offset  bytes  field
         0      4  magic b"CKWF"
         4      1  format version (1)
         5      1  message kind: 1 SparseMsg, 2 SignMsg, 3 TernMsg, 4 QsgdMsg, 5 NaturalMsg
         6      1  float dtype of section 0: 1 float32, 2 float64, 3 float16, 4 bfloat16
         7      1  kind-specific code: SparseMsg's index codec (0 raw, 1 delta, 2 bitmap); for the
                   quantized kinds the bits per element of section 1
         8      8  size: elements of the dense array the message stands for (uint64)
        16      8  count: SparseMsg: elements the message carries; QsgdMsg: levels | bucket_size << 16;
                   the other kinds: 0 (uint64)
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

"auto" picks the codec with the fewest bytes (ties: raw, then delta, then bitmap).

The quantized messages (``_quantize``): section 0 is float32 (dtype byte 1), section 1 the message's
packed code bytes exactly as the message holds them (layouts in the message classes' docstrings):

    kind  message     code (bits per element)  count                      section 0          section 1 (bytes)
       2  SignMsg     1                        0                          scale (4 B)        bits: ceil(size / 8)
       3  TernMsg     2                        0                          scale (4 B)        codes: ceil(size / 4)
       4  QsgdMsg     1 + bit_length(levels)   levels | bucket_size<<16   norms (4 B each,   codes: ceil(size*code/8)
                                                                          ceil(size / bucket_size))
       5  NaturalMsg  8                        0                          empty              codes: size

levels is 1..65535 and bucket_size 1..2^48 - 1. The bits past size in the last code byte are zero, and
the scale and the norms are never negative (NaN and +inf are allowed: the compressors give them for
non-finite input). A SignMsg of d = 10^6 elements packs into 40 + 4 + 125000 bytes, a TernMsg into
40 + 4 + 250000, a NaturalMsg into 40 + 10^6, a QsgdMsg with levels = 15 (5-bit codes) and
bucket_size = 512 into 40 + 4 * 1954 + 625000. The ``index_codec`` argument is checked but means
nothing for these kinds.

``unpack`` checks the header and every length against the buffer before it reads anything, and every
decoded index (in [0, size), strictly ascending, varints in shortest form, no stray bitmap bits); for the
quantized kinds, every parameter and length against size (code width, count, section lengths), the
padding bits and the sign of the scale or norms: a truncated, overlong or structurally corrupted buffer
raises ValueError naming what is wrong, and never reads out of bounds. ``pack`` refuses (ValueError) a
message that ``unpack`` would refuse. There is no checksum: a flipped bit inside the values or the codes
decodes to another valid message (the transport's integrity checks cover that); codes are not checked
one by one (the decompressors give every code pattern a value).

Frameworks: the buffer is a uint8 array on the CPU in the message's framework (NumPy for CuPy messages;
JAX messages get a JAX array). A CUDA message (torch or CuPy) is copied to the host
and packed there; ``unpack`` returns a CPU message in the buffer's framework (every kind alike).
pack/unpack are not torch custom ops (unpack's output dtype depends on the buffer's contents), so under
torch.compile they break the graph.
"""

from __future__ import annotations

import functools
import struct
import sys

import numpy as np

from .. import _backend, _checks
from ._quantize import NaturalMsg, QsgdMsg, SignMsg, TernMsg, _message_array, qsgd_code_bits
from ._sparse import SparseMsg

MAGIC = b"CKWF"
VERSION = 1
HEADER = struct.Struct("<4sBBBBQQQQ")
HEADER_BYTES = HEADER.size  # 40
KIND_SPARSE = 1
KIND_SIGN, KIND_TERN, KIND_QSGD, KIND_NATURAL = 2, 3, 4, 5
DTYPE_CODES = {"float32": 1, "float64": 2, "float16": 3, "bfloat16": 4}
DTYPE_NAMES = {code: name for name, code in DTYPE_CODES.items()}
ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}
INDEX_CODECS = {"raw": 0, "delta": 1, "bitmap": 2}
CODEC_NAMES = {code: name for name, code in INDEX_CODECS.items()}
_MAX_SIZE = (1 << 31) - 1
_MAX_VARINT = 5
_MAX_LEVELS = (1 << 16) - 1
_MAX_BUCKET = (1 << 48) - 1


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


def _index_codec(index_codec) -> None:
    if not isinstance(index_codec, str) or (index_codec not in INDEX_CODECS and index_codec != "auto"):
        raise ValueError(f"index_codec: expected 'auto', 'raw', 'delta' or 'bitmap', got {index_codec!r}")


def _index_bytes(indices, size: int, index_codec: str) -> tuple[int, int]:
    """(codec id, bytes of the encoded indices) for a host message; "auto" picks the smallest."""
    _index_codec(index_codec)
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


# ---- quantized messages -------------------------------------------------------------------------------

# kind -> (class, field names of (floats, codes)); NaturalMsg has no floats
_QUANTIZED = {SignMsg: (KIND_SIGN, "scale", "bits"), TernMsg: (KIND_TERN, "scale", "codes"),
              QsgdMsg: (KIND_QSGD, "norms", "codes"), NaturalMsg: (KIND_NATURAL, None, "codes")}
_QUANTIZED_NAMES = {kind: (cls, floats, codes) for cls, (kind, floats, codes) in _QUANTIZED.items()}


def _quantized_layout(kind: int, size: int, param: int) -> tuple[int, int, int]:
    """(bits per element, float32 count of section 0, bytes of section 1) of a quantized message whose
    parameters are valid."""
    if kind == KIND_SIGN:
        return 1, 1, (size + 7) // 8
    if kind == KIND_TERN:
        return 2, 1, (size + 3) // 4
    if kind == KIND_NATURAL:
        return 8, 0, size
    levels, bucket_size = param & _MAX_LEVELS, param >> 16
    width = qsgd_code_bits(levels)
    return width, (size + bucket_size - 1) // bucket_size, (size * width + 7) // 8


def _check_quantized(msg) -> tuple:
    """(kind, size, param, width, floats or None, codes) of a quantized message whose fields have the
    types and lengths its size and parameters require (TypeError/ValueError naming the field otherwise)."""
    kind, floats_name, codes_name = _QUANTIZED[type(msg)]
    size = _checks.integer(msg.size, "msg.size", 0, _MAX_SIZE)
    param = 0
    if kind == KIND_QSGD:
        levels = _checks.integer(msg.levels, "msg.levels", 1, _MAX_LEVELS)
        bucket_size = _checks.integer(msg.bucket_size, "msg.bucket_size", 1, _MAX_BUCKET)
        param = levels | bucket_size << 16
    width, n_floats, n_codes = _quantized_layout(kind, size, param)
    codes = getattr(msg, codes_name)
    _message_array(codes, f"msg.{codes_name}", "uint8", n_codes)
    floats = None
    if floats_name is not None:
        floats = getattr(msg, floats_name)
        _message_array(floats, f"msg.{floats_name}", "float32", n_floats, codes)
    return kind, size, param, width, floats, codes


def _check_quantized_contents(kind: int, size: int, width: int, floats, codes, prefix: str) -> None:
    """The padding bits past size are zero and no scale or norm is negative (ValueError otherwise)."""
    used = size * width % 8
    if used and int(codes[-1]) >> used:
        raise ValueError(f"{prefix}: the padding bits past size {size} in the last code byte are set "
                         f"(byte 0x{int(codes[-1]):02x}, {used} bits used)")
    if floats is not None and floats.size and bool(np.any(floats < 0)):
        what = "scale" if kind != KIND_QSGD else "norms"
        raise ValueError(f"{prefix}: a negative {what} ({float(floats[floats < 0][0])}); "
                         "the compressors never give one")


def _pack_quantized(msg):
    kind, size, param, width, floats, codes = _check_quantized(msg)
    _, floats_name, codes_name = _QUANTIZED[type(msg)]
    like = _host(codes, f"msg.{codes_name}")  # CUDA arrays: copied to the host, once
    host_codes = _numpy_view(like).reshape(-1)
    host_floats = None if floats is None else _numpy_view(_host(floats, f"msg.{floats_name}")).reshape(-1)
    _check_quantized_contents(kind, size, width, host_floats, host_codes, "msg")
    len0 = 0 if host_floats is None else 4 * host_floats.size
    len1 = host_codes.size
    buf = _backend.empty(like, HEADER_BYTES + len0 + len1, "uint8")
    view = _numpy_view(buf)
    view[:HEADER_BYTES] = np.frombuffer(
        HEADER.pack(MAGIC, VERSION, kind, DTYPE_CODES["float32"], width, size, param, len0, len1), dtype=np.uint8)
    if len0:
        view[HEADER_BYTES:HEADER_BYTES + len0] = host_floats.astype("<f4", copy=False).view(np.uint8)
    view[HEADER_BYTES + len0:] = host_codes
    return _backend.finish(codes, buf)


def _decode_quantized(buf, view, dtype_code: int, code: int, size: int, count: int, len0: int, len1: int, *,
                      kind: int):
    cls, floats_name, codes_name = _QUANTIZED_NAMES[kind]
    name = cls.__name__
    if dtype_code != DTYPE_CODES["float32"]:
        raise ValueError(f"buf: corrupted header (dtype code {dtype_code} for a {name}; expected 1, float32)")
    if size > _MAX_SIZE:
        raise ValueError(f"buf: corrupted header (size {size} > 2^31 - 1)")
    if kind == KIND_QSGD:
        levels, bucket_size = count & _MAX_LEVELS, count >> 16
        if levels < 1:
            raise ValueError(f"buf: corrupted header (QSGD levels {levels}; expected 1..{_MAX_LEVELS})")
        if not 1 <= bucket_size <= _MAX_BUCKET:
            raise ValueError(f"buf: corrupted header (QSGD bucket_size {bucket_size}; expected 1..2^48 - 1)")
    elif count != 0:
        raise ValueError(f"buf: corrupted header (count {count} for a {name}; expected 0)")
    width, n_floats, n_codes = _quantized_layout(kind, size, count)
    if code != width:
        raise ValueError(f"buf: corrupted header (code width {code} bits for a {name}; expected {width})")
    if len0 != 4 * n_floats:
        raise ValueError(f"buf: corrupted header ({len0} {floats_name or 'float'} bytes for a {name} of size "
                         f"{size}; expected {4 * n_floats})")
    if len1 != n_codes:
        raise ValueError(f"buf: corrupted header ({len1} code bytes for a {name} of size {size}; "
                         f"expected {n_codes})")
    floats = view[HEADER_BYTES:HEADER_BYTES + len0].view("<f4")
    codes = view[HEADER_BYTES + len0:]
    _check_quantized_contents(kind, size, width, floats if floats_name else None, codes, "buf")

    def out(data: np.ndarray, dtype: str):
        arr = _backend.empty(buf, data.size, dtype)
        _numpy_view(arr)[:] = data
        return _backend.finish(buf, arr)

    fields = {codes_name: out(codes, "uint8"), "size": size}
    if floats_name is not None:
        fields[floats_name] = out(floats, "float32")
    if kind == KIND_QSGD:
        fields.update(levels=count & _MAX_LEVELS, bucket_size=count >> 16)
    return cls(**fields)


def nbytes(msg, index_codec: str = "auto") -> int:
    """The exact length of ``pack(msg, index_codec)`` (also ``msg.nbytes`` for the default codec).

    For the delta codec (and "auto") this is one pass over the indices; a CUDA message's indices are
    copied to the host for it. For the quantized messages it is arithmetic on the size and parameters
    (the fields' types and lengths are checked; their contents only by ``pack``).
    """
    if type(msg) in _QUANTIZED:
        _index_codec(index_codec)
        kind, size, param, _, _, _ = _check_quantized(msg)
        _, n_floats, n_codes = _quantized_layout(kind, size, param)
        return HEADER_BYTES + 4 * n_floats + n_codes
    if not isinstance(msg, SparseMsg):
        raise TypeError(f"msg: expected a SparseMsg, SignMsg, TernMsg, QsgdMsg or NaturalMsg, got {type(msg).__name__}")
    values, indices, size = _check_sparse(msg)
    _, index_bytes = _index_bytes(_host(indices, "msg.indices"), size, index_codec)
    return HEADER_BYTES + _backend.numel(values) * ITEMSIZE[_backend.dtype_name(values)] + index_bytes


def pack(msg, index_codec: str = "auto"):
    """``msg`` as one uint8 buffer (layout in this module's docstring); ``unpack`` inverts it exactly.

    msg: a SparseMsg (indices int32 or int64, strictly ascending, in [0, size): ValueError otherwise), or
    a SignMsg, TernMsg, QsgdMsg or NaturalMsg (fields of the dtypes and lengths its size and parameters
    require, zero padding bits, no negative scale or norm: TypeError/ValueError otherwise).
    index_codec: "auto" (the smallest), "raw", "delta" or "bitmap" (checked, and ignored for the quantized
    messages, which carry no indices).
    Returns a 1-D uint8 array on the CPU: a torch tensor for torch messages, a NumPy array for NumPy and
    CuPy ones, a JAX array for JAX ones. CUDA messages are copied to the host first.
    """
    if type(msg) in _QUANTIZED:
        _index_codec(index_codec)
        return _pack_quantized(msg)
    if not isinstance(msg, SparseMsg):
        raise TypeError(f"msg: expected a SparseMsg, SignMsg, TernMsg, QsgdMsg or NaturalMsg, got {type(msg).__name__}")
    values, indices, size = _check_sparse(msg)
    values, indices = _host(values, "msg.values"), _host(indices, "msg.indices")
    if _backend.is_torch(indices):  # a zero-copy NumPy view crosses into C++ cheaper than torch's __dlpack__
        indices = indices.detach().numpy()
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
    _backend.module(values).encode_sparse(values.reshape(-1), indices.reshape(-1), size, codec, view[HEADER_BYTES:])
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
    # NumPy views (zero-copy) of the CPU buffers cross into C++ cheaper than torch's __dlpack__
    _backend.module(values).decode_sparse(view[HEADER_BYTES:], size, code, values,
                                          indices.numpy() if _backend.is_torch(indices) else indices)
    if numpy_bf16:
        values = values.view(ml_dtypes.bfloat16)
        if fw == "jax":
            import jax.numpy as jnp

            return SparseMsg(jnp.asarray(values), _backend.finish(buf, indices), size)
    return SparseMsg(_backend.finish(buf, values), _backend.finish(buf, indices), size)


_DECODERS = {KIND_SPARSE: _decode_sparse,
             **{kind: functools.partial(_decode_quantized, kind=kind) for kind in _QUANTIZED_NAMES}}


def unpack(buf):
    """The message that ``pack`` turned into ``buf``, exactly (bit for bit; a SparseMsg's indices come back
    int32), of the class that was packed.

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
for _cls in _QUANTIZED:
    _cls.nbytes = property(nbytes, doc="The exact length of pack(msg): the 40-byte header, the float32 scale or "
                                       "norms, and the code bytes.")
del _cls
