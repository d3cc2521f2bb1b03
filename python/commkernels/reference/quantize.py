"""Reference (NumPy) of the quantizers of ``commkernels.compress``: the executable specification.

Written from the definitions in ``shared/specs/compress.md`` and the layouts documented in
``csrc/compress/quantize.h``. Every function works on the flattened (C-order) view of NumPy arrays;
bfloat16 data is passed as float32 (exact), as in ``reference.compress``.

Arithmetic happens in the accumulation type of the kernels: float32 for float32, float16 and bfloat16
inputs, float64 for float64 inputs (so codes match the kernels bit for bit). Scales that are sums (the
sign scale, QSGD's bucket norms) are computed here in float64 by NumPy; the kernels' fixed-order float64
sums may round to a neighbouring float32, so functions whose codes depend on such a scale accept it as
an argument.

Random draws: element i uses ``word(i) = philox(seed, step, (i // 4) mod 2^32, (tag << 24) | (i >> 34))[i % 4]``,
and an event of probability p happens when ``word / 2^32 < p``.
"""

from __future__ import annotations

import functools

import numpy as np

from .compress import philox, round_to_bfloat16

__all__ = [
    "TAG_QSGD", "TAG_TERNGRAD", "TAG_NATURAL", "TAG_STOCHASTIC_ROUND", "quant_words", "sign_compress",
    "sign_decompress", "sign_compress_ef", "terngrad", "terngrad_decompress", "terngrad_ef", "qsgd_code_bits",
    "qsgd_norms", "qsgd", "qsgd_decompress", "qsgd_ef", "natural_compress", "natural_decompress",
    "natural_compress_ef", "stochastic_round", "pack_codes", "unpack_codes",
]

TAG_QSGD, TAG_TERNGRAD, TAG_NATURAL, TAG_STOCHASTIC_ROUND = 0x51, 0x54, 0x4E, 0x52
NATURAL_BIAS = 100  # code c (1..127) stands for 2^(c - 100)
_FLOAT_DTYPES = ("float16", "float32", "float64")


def _quiet(f):
    """Non-finite inputs are part of every quantizer's domain: no NumPy floating-point warnings."""

    @functools.wraps(f)
    def wrapped(*args, **kwargs):
        with np.errstate(all="ignore"):
            return f(*args, **kwargs)

    return wrapped


def quant_words(seed: int, step: int, tag: int, size: int) -> np.ndarray:
    """word(i) for i in [0, size) (uint32)."""
    i = np.arange(size, dtype=np.uint64)
    q = i >> np.uint64(2)
    a = q & np.uint64(0xFFFFFFFF)
    b = np.uint64(tag << 24) | (i >> np.uint64(34))
    words = philox(seed, step, a, b)  # (4, size)
    return words[(i & np.uint64(3)).astype(np.int64), np.arange(size)] if size else np.zeros(0, np.uint32)


def _bernoulli(words: np.ndarray, p: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return words.astype(np.float64) < np.asarray(p, dtype=np.float64) * 2.0 ** 32


def _flat(x, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array, got {type(x).__name__}")
    if x.dtype.name not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: expected float16, float32 or float64, got {x.dtype}")
    return x.reshape(-1)


def _acc(flat: np.ndarray) -> np.ndarray:
    return flat.astype(np.float64 if flat.dtype == np.float64 else np.float32)


def _float32_up(v: float) -> np.float32:
    """The smallest float32 >= v (v >= 0; NaN stays NaN)."""
    f = np.float32(v)
    if np.float64(f) < v:
        f = np.nextafter(f, np.float32(np.inf))
    return f


def _store(p: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return round_to_bfloat16(p)
    with np.errstate(over="ignore", invalid="ignore"):
        return p.astype(dtype)


def pack_codes(codes: np.ndarray, width: int) -> np.ndarray:
    """Codes of `width` bits each, packed LSB first: code i occupies bits [i width, (i+1) width) of the stream."""
    codes = np.asarray(codes, dtype=np.uint64)
    bits = (codes[:, None] >> np.arange(width, dtype=np.uint64)[None, :]) & np.uint64(1)
    return np.packbits(bits.reshape(-1).astype(np.uint8), bitorder="little")


def unpack_codes(packed: np.ndarray, width: int, size: int) -> np.ndarray:
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), bitorder="little")[: size * width]
    bits = bits.reshape(size, width).astype(np.uint64)
    return (bits << np.arange(width, dtype=np.uint64)[None, :]).sum(axis=1).astype(np.uint32)


def _ef(grad, residual, residual_dtype):
    g, r = _flat(grad, "grad"), _flat(residual, "residual")
    if g.size != r.size:
        raise ValueError(f"residual: expected {g.size} elements like grad, got {r.size}")
    store = residual_dtype or r.dtype.name
    acc = np.float64 if store == "float64" else np.float32
    with np.errstate(over="ignore", invalid="ignore"):
        p = r.astype(acc) + g.astype(acc)
    return p, store


def _new_residual(p: np.ndarray, decoded: np.ndarray, store: str) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return _store(p - decoded.astype(p.dtype), store)


# ---- sign -----------------------------------------------------------------------------------------------

@_quiet
def sign_compress(x, scale="l1"):
    """(bits, scale): bit j of byte b is 1 when x[8b + j] < 0 (so +0, -0 and NaN count as +1); scale is
    float32: "l1": sum|x| / d, "l2": sqrt(sum x^2 / d), None: 1 (d = 0: 0 for l1/l2)."""
    flat = _flat(x, "x")
    with np.errstate(invalid="ignore"):
        bits = np.packbits(flat < 0, bitorder="little")
    v = flat.astype(np.float64)
    if scale is None:
        s = np.float32(1.0)
    elif flat.size == 0:
        s = np.float32(0.0)
    elif scale == "l1":
        s = np.float32(np.sum(np.abs(v)) / v.size)
    elif scale == "l2":
        with np.errstate(over="ignore", invalid="ignore"):
            s = np.float32(np.sqrt(np.sum(v * v) / v.size))
    else:
        raise ValueError(f"scale: expected 'l1', 'l2' or None, got {scale!r}")
    return bits, s


@_quiet
def sign_decompress(bits, scale, size: int) -> np.ndarray:
    """float32: -scale where the bit is 1, +scale elsewhere."""
    neg = np.unpackbits(np.asarray(bits, np.uint8), bitorder="little")[:size].astype(bool)
    s = np.float32(scale)
    return np.where(neg, -s, s).astype(np.float32)


@_quiet
def sign_compress_ef(grad, residual, scale="l1", residual_dtype=None, scale_value=None):
    """(bits, scale, new_residual): p = residual + grad; (bits, scale) = sign_compress(p, scale), with
    scale_value (if given) used as the scale; new_residual = p - sign_decompress(...), rounded to the
    residual's dtype ("bfloat16": see reference.compress.ef_topk)."""
    p, store = _ef(grad, residual, residual_dtype)
    bits, s = sign_compress(p, scale)
    if scale_value is not None:
        s = np.float32(scale_value)
    return bits, s, _new_residual(p, sign_decompress(bits, s, p.size), store)


# ---- TernGrad -------------------------------------------------------------------------------------------

@_quiet
def terngrad(x, seed: int, step: int):
    """(codes, scale): scale = max|x| as float32 (float64 inputs: rounded up); element i is sent with
    probability |x_i| / scale (computed in the accumulation type); 2-bit codes, 4 per byte, element 4b + j
    in bits 2j..2j+1 of byte b: 0 not sent, 1 sent positive, 3 sent negative."""
    flat = _flat(x, "x")
    a = np.abs(_acc(flat))
    m = np.max(a) if a.size else a.dtype.type(0)
    s = _float32_up(float(m))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = a / a.dtype.type(s)
        sent = (s > 0) & _bernoulli(quant_words(seed, step, TAG_TERNGRAD, flat.size), p)
        neg = flat < 0
    codes = np.where(sent, np.where(neg, 3, 1), 0).astype(np.uint8)
    return pack_codes(codes, 2), s


@_quiet
def terngrad_decompress(codes, scale, size: int) -> np.ndarray:
    c = unpack_codes(codes, 2, size)
    s = np.float32(scale)
    return np.where(c == 1, s, np.where(c == 3, -s, np.float32(0))).astype(np.float32)


@_quiet
def terngrad_ef(grad, residual, seed: int, step: int, residual_dtype=None):
    p, store = _ef(grad, residual, residual_dtype)
    codes, s = terngrad(p, seed, step)
    return codes, s, _new_residual(p, terngrad_decompress(codes, s, p.size), store)


# ---- QSGD -----------------------------------------------------------------------------------------------

def qsgd_code_bits(levels: int) -> int:
    """1 sign bit + ceil(log2(levels + 1)) bits for xi in [0, levels]."""
    return 1 + int(levels).bit_length()


@_quiet
def qsgd_norms(x, bucket_size: int) -> np.ndarray:
    """float32 L2 norms of the buckets of bucket_size consecutive elements (the last may be shorter)."""
    flat = _flat(x, "x").astype(np.float64)
    out = []
    for b in range(0, flat.size, bucket_size):
        with np.errstate(over="ignore", invalid="ignore"):
            out.append(_float32_up(float(np.sqrt(np.sum(flat[b:b + bucket_size] ** 2)))))
    return np.array(out, dtype=np.float32)


@_quiet
def qsgd(x, levels: int, seed: int, step: int, bucket_size: int, norms=None):
    """(codes, norms): per bucket, r = |x| levels / norm (accumulation type), xi = floor(r) + [U < r - floor(r)]
    (xi = levels where r >= levels); code = xi << 1 | (x < 0) (0 when xi = 0; all 0 in a bucket whose
    norm is not > 0); codes packed qsgd_code_bits(levels) bits each, LSB first. `norms` (float32, one per
    bucket) overrides the norms."""
    flat = _flat(x, "x")
    if norms is None:
        norms = qsgd_norms(flat, bucket_size)
    norms = np.asarray(norms, dtype=np.float32)
    v = _acc(flat)
    t = v.dtype.type
    norm = norms[np.arange(flat.size) // bucket_size].astype(v.dtype) if flat.size else v
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        r = (np.abs(v) * t(levels)) / norm
        low = np.floor(r)
        up = _bernoulli(quant_words(seed, step, TAG_QSGD, flat.size), r - low)
        xi = np.where(r < t(levels), low + up, t(levels))
        xi = np.where(norm > 0, xi, 0).astype(np.int64)
    neg = (v < 0).astype(np.int64)
    codes = np.where(xi == 0, 0, (xi << 1) | neg)
    return pack_codes(codes, qsgd_code_bits(levels)), norms


@_quiet
def qsgd_decompress(codes, norms, levels: int, bucket_size: int, size: int) -> np.ndarray:
    """float32: sign * (norm * xi) / levels, each operation rounded to float32."""
    c = unpack_codes(codes, qsgd_code_bits(levels), size).astype(np.int64)
    norm = np.asarray(norms, np.float32)[np.arange(size) // bucket_size] if size else np.zeros(0, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        magnitude = (norm * (c >> 1).astype(np.float32)) / np.float32(levels)
    return np.where(c & 1, -magnitude, magnitude).astype(np.float32)


@_quiet
def qsgd_ef(grad, residual, levels: int, seed: int, step: int, bucket_size: int, residual_dtype=None, norms=None):
    p, store = _ef(grad, residual, residual_dtype)
    codes, norms = qsgd(p, levels, seed, step, bucket_size, norms)
    return codes, norms, _new_residual(p, qsgd_decompress(codes, norms, levels, bucket_size, p.size), store)


# ---- natural compression ------------------------------------------------------------------------------

@_quiet
def natural_compress(x, seed: int, step: int) -> np.ndarray:
    """uint8 codes: |x| in [2^e, 2^(e+1)) becomes 2^(e+1) with probability |x|/2^e - 1, else 2^e; below
    2^-99 it becomes 2^-99 with probability |x| / 2^-99, else 0; at or above 2^27 (and inf) it is 2^27;
    NaN is 0. Code: 0 for zero, else sign in bit 7 and e + 100 in bits 0-6."""
    flat = _flat(x, "x")
    a = np.abs(flat.astype(np.float64))
    words = quant_words(seed, step, TAG_NATURAL, flat.size)
    mant, e = np.frexp(a)  # a = mant 2^e, mant in [0.5, 1)
    e = e.astype(np.int64) - 1  # floor(log2 a)
    with np.errstate(invalid="ignore", over="ignore"):
        frac = a / np.ldexp(1.0, np.clip(e, -1074, 1023)) - 1.0
        up = _bernoulli(words, frac).astype(np.int64)
        tiny_up = _bernoulli(words, a * 2.0 ** 99)
    code = np.where(a >= 2.0 ** 27, 127, e + NATURAL_BIAS + up)
    code = np.where(a < 2.0 ** -99, np.where(tiny_up, 1, 0), code)
    code = np.where(np.isnan(a), 0, code)
    with np.errstate(invalid="ignore"):
        sign = np.where((flat < 0) & (code != 0), 0x80, 0)
    return (code | sign).astype(np.uint8)


@_quiet
def natural_decompress(codes, size: int | None = None) -> np.ndarray:
    c = np.asarray(codes, np.uint8).astype(np.int64)
    magnitude = np.where(c & 127, np.ldexp(1.0, (c & 127) - NATURAL_BIAS), 0.0)
    return np.where(c & 128, -magnitude, magnitude).astype(np.float32)


@_quiet
def natural_compress_ef(grad, residual, seed: int, step: int, residual_dtype=None):
    p, store = _ef(grad, residual, residual_dtype)
    codes = natural_compress(p, seed, step)
    return codes, _new_residual(p, natural_decompress(codes), store)


# ---- stochastic rounding ------------------------------------------------------------------------------

@_quiet
def stochastic_round(x, dtype: str, seed: int, step: int) -> np.ndarray:
    """float32 x to bfloat16 (returned as float32 holding bfloat16 values) or float16: |x| between the
    neighbouring representable magnitudes lo <= |x| < hi becomes hi with probability (|x| - lo) / (hi - lo).
    Past the largest finite value, hi is the next power of two (encoded as infinity). inf stays, NaN stays NaN."""
    flat = np.asarray(x).reshape(-1)
    if flat.dtype != np.float32:
        raise TypeError(f"x: expected float32, got {flat.dtype}")
    a = np.abs(flat.astype(np.float64))
    words = quant_words(seed, step, TAG_STOCHASTIC_ROUND, flat.size)
    if dtype == "bfloat16":
        lo_bits = np.abs(flat).view(np.uint32) & np.uint32(0xFFFF0000)
        hi_bits = lo_bits + np.uint32(0x10000)
        lo = lo_bits.view(np.float32).astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            hi = np.where(hi_bits >= np.uint32(0x7F800000), 2.0 ** 128, hi_bits.view(np.float32).astype(np.float64))
            take_hi = _bernoulli(words, (a - lo) / (hi - lo))
        mag = np.where(take_hi, hi_bits, lo_bits).view(np.float32)
        out = np.where(np.signbit(flat), -mag, mag).astype(np.float32)
        return np.where(np.isfinite(flat), out, flat)
    if dtype == "float16":
        with np.errstate(over="ignore", invalid="ignore"):
            lo16 = np.abs(flat).astype(np.float16)
            lo16 = np.where(lo16.astype(np.float64) > a, np.nextafter(lo16, np.float16(0)), lo16)
            hi16 = np.nextafter(lo16, np.float16(np.inf))
            lo, hi = lo16.astype(np.float64), hi16.astype(np.float64)
            hi = np.where(np.isinf(hi), 65536.0, hi)
            take_hi = _bernoulli(words, (a - lo) / (hi - lo))
            mag = np.where(a >= 65536.0, np.float16(np.inf), np.where(take_hi, hi16, lo16))
            out = np.where(np.signbit(flat), -mag, mag).astype(np.float16)
        return np.where(np.isnan(flat), np.float16(np.nan), out)
    raise ValueError(f"dtype: expected 'bfloat16' or 'float16', got {dtype!r}")
