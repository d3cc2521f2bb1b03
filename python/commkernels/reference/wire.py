"""Reference of the wire format (``commkernels.compress._wire``'s docstring has the layout), and of the
two variable-size sparse operations that travel with it: sparse aggregation and threshold selection.

Plain Python and NumPy, written from the layout: a header, the values' bytes, then the indices as raw
uint32, as LEB128 varints of the first index and the gaps, or as an LSB-first bitmap. The quantized
messages: a header, their float32 scale or norms, then their code bytes as they are.
"""

from __future__ import annotations

import struct

import numpy as np

__all__ = ["encode_indices", "decode_indices", "index_nbytes", "pack", "unpack", "CODECS", "sparse_aggregate",
           "threshold", "kth_largest_magnitude", "QUANTIZED_KINDS", "code_width", "pack_quantized",
           "unpack_quantized"]

CODECS = ("raw", "delta", "bitmap")
_HEADER = struct.Struct("<4sBBBBQQQQ")
_DTYPES = {"float32": 1, "float64": 2, "float16": 3, "bfloat16": 4}
_ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        byte, v = v & 0x7F, v >> 7
        out.append(byte | (0x80 if v else 0))
        if not v:
            return bytes(out)


def encode_indices(indices, size: int, codec: str) -> bytes:
    idx = [int(i) for i in np.asarray(indices).reshape(-1)]
    if any(b <= a for a, b in zip(idx, idx[1:])) or any(i < 0 or i >= size for i in idx):
        raise ValueError("indices: expected strictly ascending indices in [0, size)")
    if codec == "raw":
        return np.asarray(idx, dtype="<u4").tobytes()
    if codec == "delta":
        return b"".join(_varint(i - p) for p, i in zip([0] + idx, idx))
    if codec == "bitmap":
        bits = np.zeros(size, dtype=np.uint8)
        bits[idx] = 1
        return np.packbits(bits, bitorder="little").tobytes()
    raise ValueError(f"codec: {codec!r}")


def decode_indices(data: bytes, count: int, size: int, codec: str) -> np.ndarray:
    if codec == "raw":
        return np.frombuffer(data, dtype="<u4").astype(np.int32)
    if codec == "delta":
        out, pos, prev = [], 0, 0
        for _ in range(count):
            v, shift = 0, 0
            while True:
                byte = data[pos]
                pos += 1
                v |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            prev = prev + v
            out.append(prev)
        return np.asarray(out, dtype=np.int32)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[:size]
    return np.flatnonzero(bits).astype(np.int32)


def index_nbytes(indices, size: int, codec: str) -> int:
    return len(encode_indices(indices, size, codec))


def choose_codec(indices, size: int) -> str:
    """The codec with the fewest bytes; ties go to the earlier of raw, delta, bitmap."""
    sizes = [index_nbytes(indices, size, c) for c in CODECS]
    return CODECS[sizes.index(min(sizes))]


def pack(value_bytes: bytes, dtype: str, indices, size: int, codec: str = "auto") -> bytes:
    """value_bytes: the values' raw little-endian bytes, in dtype (bfloat16: the 16-bit patterns)."""
    if codec == "auto":
        codec = choose_codec(indices, size)
    count = int(np.asarray(indices).size)
    assert len(value_bytes) == count * _ITEMSIZE[dtype]
    index_bytes = encode_indices(indices, size, codec)
    header = _HEADER.pack(b"CKWF", 1, 1, _DTYPES[dtype], CODECS.index(codec), size, count, len(value_bytes),
                          len(index_bytes))
    return header + value_bytes + index_bytes


def unpack(buf: bytes):
    """(value_bytes, dtype, indices, size) of a well-formed buffer."""
    magic, version, kind, dtype_code, codec, size, count, len0, len1 = _HEADER.unpack(buf[:_HEADER.size])
    assert (magic, version, kind) == (b"CKWF", 1, 1) and len(buf) == _HEADER.size + len0 + len1
    dtype = {v: k for k, v in _DTYPES.items()}[dtype_code]
    values = buf[_HEADER.size:_HEADER.size + len0]
    indices = decode_indices(buf[_HEADER.size + len0:], count, size, CODECS[codec])
    return values, dtype, indices, size


QUANTIZED_KINDS = {"sign": 2, "tern": 3, "qsgd": 4, "natural": 5}


def code_width(kind: str, levels: int | None = None) -> int:
    """Bits per element: sign 1, tern 2, natural 8, qsgd 1 + ceil(log2(levels + 1))."""
    if kind == "qsgd":
        return 1 + int(levels).bit_length()
    return {"sign": 1, "tern": 2, "natural": 8}[kind]


def pack_quantized(kind: str, floats, codes: bytes, size: int, levels: int | None = None,
                   bucket_size: int | None = None) -> bytes:
    """kind: "sign", "tern", "qsgd" or "natural"; floats: the scale (sign, tern), the norms (qsgd) or
    nothing (natural), written as little-endian float32; codes: the packed code bytes."""
    floats = np.asarray([] if floats is None else floats, dtype="<f4").reshape(-1)
    width = code_width(kind, levels)
    assert len(codes) == (size * width + 7) // 8
    if kind == "qsgd":
        assert floats.size == -(-size // bucket_size)
        count = levels + bucket_size * 2 ** 16
    else:
        assert floats.size == (0 if kind == "natural" else 1)
        count = 0
    header = _HEADER.pack(b"CKWF", 1, QUANTIZED_KINDS[kind], 1, width, size, count, 4 * floats.size, len(codes))
    return header + floats.tobytes() + bytes(codes)


def unpack_quantized(buf: bytes):
    """(kind, floats as float32, code bytes, size, levels, bucket_size) of a well-formed buffer (levels and
    bucket_size None but for qsgd)."""
    magic, version, kind_id, dtype_code, width, size, count, len0, len1 = _HEADER.unpack(buf[:_HEADER.size])
    kind = {v: k for k, v in QUANTIZED_KINDS.items()}[kind_id]
    assert (magic, version, dtype_code) == (b"CKWF", 1, 1) and len(buf) == _HEADER.size + len0 + len1
    levels, bucket_size = (count % 2 ** 16, count // 2 ** 16) if kind == "qsgd" else (None, None)
    assert width == code_width(kind, levels)
    floats = np.frombuffer(buf[_HEADER.size:_HEADER.size + len0], dtype="<f4").astype(np.float32)
    return kind, floats, bytes(buf[_HEADER.size + len0:]), size, levels, bucket_size


def sparse_aggregate(msgs, size: int, average: bool = False) -> np.ndarray:
    """sum over the messages (values, indices) of their dense size-element arrays, in float64; / len(msgs)
    if average."""
    out = np.zeros(size, dtype=np.float64)
    for values, indices in msgs:
        np.add.at(out, np.asarray(indices).reshape(-1).astype(np.int64), np.asarray(values, np.float64).reshape(-1))
    return out / len(msgs) if average else out


def threshold(x, v: float):
    """(values, indices) of the entries with |x| > v (NaN never passes), indices ascending int32."""
    x = np.asarray(x).reshape(-1)
    with np.errstate(invalid="ignore"):
        indices = np.flatnonzero(np.abs(x.astype(np.float64)) > v).astype(np.int32)
    return x[indices], indices


def kth_largest_magnitude(x, k: int) -> float:
    """The k-th largest |x| (k >= 1), NaN counting as the largest magnitude (as topk does); inf for k = 0."""
    if k == 0:
        return float("inf")
    mag = np.abs(np.asarray(x, dtype=np.float64).reshape(-1))
    mag = np.where(np.isnan(mag), np.inf, mag)
    nans = int(np.isnan(np.asarray(x, dtype=np.float64)).sum())
    if k <= nans:
        return float("nan")
    return float(np.sort(mag)[::-1][k - 1])
