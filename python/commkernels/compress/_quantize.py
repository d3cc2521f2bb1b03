"""Quantizers: scaled sign, TernGrad, QSGD, natural compression, stochastic rounding, with error feedback.

Every message is a NamedTuple of arrays in the caller's framework (uint8 codes plus float32 scales) and
the integers needed to decode it; ``*_decompress(msg)`` is exact. Stochastic quantizers take (seed, step)
and draw element i's randomness from the Philox stream (csrc/compress/quantize.h): word (i mod 4) of
``philox(seed, step, a=(i // 4) mod 2^32, b=(tag << 24) | (i >> 34))``, with the tag 0x51 ('Q') for qsgd,
0x54 ('T') for terngrad, 0x4E ('N') for natural_compress and 0x52 ('R') for stochastic_round. An event of
probability p happens when word / 2^32 < p (compared exactly). Same inputs, same (seed, step): same
bits on every run, thread count and backend.

Error-feedback variants ``*_ef_(grad, residual, ...)``: p = residual + grad (float32; float64 for a
float64 residual), message = compress(p), residual <- p - decompress(message), in place. residual is
float32 or grad's dtype. Reductions (the sign scale, TernGrad's max, QSGD's norms) run over p in a fixed
order, so results do not depend on the number of threads.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import _backend, _checks, _torch_ops

_MAX_SIZE = (1 << 31) - 1
_MAX_UINT64 = (1 << 64) - 1
_MAX_LEVELS = (1 << 16) - 1
_SCALE_KINDS = {None: 0, "l1": 1, "l2": 2}


class SignMsg(NamedTuple):
    """Signs of ``size`` elements, 8 per byte (bit j of byte b is element 8b + j, 1 = negative), and
    ``scale``: a 1-element float32 array (1 for an unscaled sign)."""

    bits: Any
    scale: Any
    size: int


class TernMsg(NamedTuple):
    """TernGrad: 2-bit codes, 4 per byte (element 4b + j in bits 2j..2j+1 of byte b; 0: 0, 1: +scale,
    3: -scale), and ``scale`` = max|x| (1-element float32 array)."""

    codes: Any
    scale: Any
    size: int


class QsgdMsg(NamedTuple):
    """QSGD: codes of 1 + ceil(log2(levels + 1)) bits (bit 0: negative, bits 1..: xi), packed LSB first,
    and ``norms``: one float32 L2 norm per bucket of ``bucket_size`` elements."""

    codes: Any
    norms: Any
    size: int
    levels: int
    bucket_size: int


class NaturalMsg(NamedTuple):
    """Natural compression: one uint8 code per element (0: zero; else bit 7 the sign, bits 0-6 c in
    1..127 for the magnitude 2^(c - 100))."""

    codes: Any
    size: int


def _torch_dtype(name: str):
    return getattr(_torch_ops.torch, name)


def _seed_step(seed, step) -> tuple[int, int]:
    return (_checks.integer(seed, "seed", 0, _MAX_UINT64), _checks.integer(step, "step", 0, _MAX_UINT64))


def _input(x, name: str = "x") -> int:
    _checks.float_array(x, name)
    return _checks.integer(_backend.numel(x), f"{name}.size", 0, _MAX_SIZE)




def _scale_kind(scale) -> int:
    if isinstance(scale, str) or scale is None:
        if scale in _SCALE_KINDS:
            return _SCALE_KINDS[scale]
    raise ValueError(f"scale: expected 'l1', 'l2' or None, got {scale!r}")


def _out_dtype(dtype) -> str:
    if not isinstance(dtype, str) or dtype not in _backend.FLOAT_DTYPES:
        raise ValueError(f"dtype: expected one of {', '.join(_backend.FLOAT_DTYPES)}, got {dtype!r}")
    return dtype


def _message_array(a, name: str, dtype: str, n: int, like=None) -> None:
    _backend.framework(a, name)
    if like is not None:
        _checks.same_place(like, a, "msg", name)
    if _backend.dtype_name(a) != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {_backend.dtype_name(a)}")
    _checks.contiguous(a, name)
    if _backend.numel(a) != n:
        raise ValueError(f"{name}: expected {n} elements, got {_backend.numel(a)}")


def _decompress_out(like, size: int, dtype: str):
    if _backend.framework(like, "msg") in ("numpy", "jax") and dtype == "bfloat16":
        raise TypeError("dtype: NumPy has no bfloat16: use torch tensors for bfloat16 output")
    return _backend.output_buffer(like, size, dtype)


# ---- sign -----------------------------------------------------------------------------------------------

def _sign_kernel(x, kind: int):
    size = _backend.numel(x)
    bits, scale = _backend.output_buffer(x, (size + 7) // 8, "uint8"), _backend.output_buffer(x, 1, "float32")
    _backend.module(x).sign_compress(x, kind, bits, scale, _backend.stream(x))
    return _backend.finish(x, bits), _backend.finish(x, scale)


def _sign_fake(x, kind):
    torch = _torch_ops.torch
    return x.new_empty((x.numel() + 7) // 8, dtype=torch.uint8), x.new_empty(1, dtype=torch.float32)


_sign_op = _torch_ops.define("sign_compress", "(Tensor x, int kind) -> (Tensor, Tensor)", _sign_kernel, _sign_fake)


def sign_compress(x, scale="l1") -> SignMsg:
    """scale * sign(x) (flattened) as packed bits plus one float32 scale.

    sign(v) = -1 where v < 0, else +1: +0, -0 and NaN all give +1. scale: "l1" (sum|x| / d, the
    scale of EF-signSGD), "l2" (||x||_2 / sqrt(d)) or None (1). The scale is a fixed-order float64 sum
    (blocks of 2^14 elements, 16 lanes, blocks added in order) rounded to float32; a non-finite input
    gives a non-finite scale, as does a float64 input whose scale is beyond the float32 range; d = 0
    gives 0. One pass over x: each block of 2^14 elements gives its partial sum, then its bits while in cache.
    """
    size = _input(x)
    kind = _scale_kind(scale)
    bits, s = _sign_op(x, kind) if _backend.is_torch(x) else _sign_kernel(x, kind)
    return SignMsg(bits, s, size)


def _sign_ef_kernel(grad, residual, kind: int):
    size = _backend.numel(grad)
    bits, scale = _backend.output_buffer(grad, (size + 7) // 8, "uint8"), _backend.output_buffer(grad, 1, "float32")
    _backend.module(grad).sign_compress_ef(grad, residual, kind, bits, scale, _backend.stream(grad))
    return bits, scale


_sign_ef_op = _torch_ops.define("sign_compress_ef_", "(Tensor grad, Tensor(a!) residual, int kind) -> (Tensor, Tensor)",
                                _sign_ef_kernel, lambda grad, residual, kind: _sign_fake(grad, kind),
                                mutates_args=("residual",))


def sign_compress_ef_(grad, residual, scale="l1") -> SignMsg:
    """sign_compress with error feedback: p = residual + grad, msg = sign_compress(p, scale),
    residual <- p - sign_decompress(msg). One pass for the scale, one fused pass for the bits and the
    residual (grad and residual are re-read, p is never stored)."""
    size = _checks.grad_and_residual(grad, residual)
    kind = _scale_kind(scale)
    op = _sign_ef_op if _backend.is_torch(grad) else _sign_ef_kernel
    bits, s = op(grad, residual, kind)
    return SignMsg(bits, s, size)


def _sign_decompress_kernel(bits, scale, size: int, dtype: str):
    out = _decompress_out(bits, size, dtype)
    _backend.module(bits).sign_decompress(bits, scale, out, _backend.stream(bits))
    return _backend.finish(bits, out)


_sign_decompress_op = _torch_ops.define(
    "sign_decompress", "(Tensor bits, Tensor scale, int size, str dtype) -> Tensor", _sign_decompress_kernel,
    lambda bits, scale, size, dtype: bits.new_empty(size, dtype=_torch_dtype(dtype)))


def sign_decompress(msg: SignMsg, dtype: str = "float32"):
    """The dense array of msg: -scale where the bit is 1, +scale elsewhere, in `dtype` (the float32 value
    rounded to it)."""
    bits, scale, size = msg
    size = _checks.integer(size, "msg.size", 0, _MAX_SIZE)
    _message_array(bits, "msg.bits", "uint8", (size + 7) // 8)
    _message_array(scale, "msg.scale", "float32", 1, bits)
    dtype = _out_dtype(dtype)
    if _backend.is_torch(bits):
        return _sign_decompress_op(bits, scale, size, dtype)
    return _sign_decompress_kernel(bits, scale, size, dtype)


# ---- TernGrad -------------------------------------------------------------------------------------------

def _terngrad_kernel(x, seed: int, step: int):
    size = _backend.numel(x)
    codes, scale = _backend.output_buffer(x, (size + 3) // 4, "uint8"), _backend.output_buffer(x, 1, "float32")
    seed, step = _torch_ops.to_uint64(seed), _torch_ops.to_uint64(step)
    _backend.module(x).terngrad(x, seed, step, codes, scale, _backend.stream(x))
    return _backend.finish(x, codes), _backend.finish(x, scale)


def _terngrad_fake(x, *args):
    torch = _torch_ops.torch
    return x.new_empty((x.numel() + 3) // 4, dtype=torch.uint8), x.new_empty(1, dtype=torch.float32)


_terngrad_op = _torch_ops.define("terngrad", "(Tensor x, int seed, int step) -> (Tensor, Tensor)", _terngrad_kernel,
                                 _terngrad_fake)


def terngrad(x, seed: int, step: int) -> TernMsg:
    """TernGrad (Wen et al., 2017): scale * sign(x) * Bernoulli(|x| / scale), scale = max|x|.

    Unbiased: E[terngrad_decompress(msg)] = x over (seed, step). scale is float32 (for float64 inputs
    rounded up, so |x| / scale <= 1); the probability |x| / scale is computed in float32 (float64 for
    float64 inputs). A NaN makes the scale NaN and every code 0; an infinity makes the scale infinite.
    """
    size = _input(x)
    seed, step = _seed_step(seed, step)
    if _backend.is_torch(x):
        codes, s = _terngrad_op(x, _torch_ops.to_int64(seed), _torch_ops.to_int64(step))
    else:
        codes, s = _terngrad_kernel(x, seed, step)
    return TernMsg(codes, s, size)


def _terngrad_ef_kernel(grad, residual, seed: int, step: int):
    size = _backend.numel(grad)
    codes, scale = _backend.output_buffer(grad, (size + 3) // 4, "uint8"), _backend.output_buffer(grad, 1, "float32")
    seed, step = _torch_ops.to_uint64(seed), _torch_ops.to_uint64(step)
    _backend.module(grad).terngrad_ef(grad, residual, seed, step, codes, scale, _backend.stream(grad))
    return codes, scale


_terngrad_ef_op = _torch_ops.define(
    "terngrad_ef_", "(Tensor grad, Tensor(a!) residual, int seed, int step) -> (Tensor, Tensor)",
    _terngrad_ef_kernel, lambda grad, residual, seed, step: _terngrad_fake(grad), mutates_args=("residual",))


def terngrad_ef_(grad, residual, seed: int, step: int) -> TernMsg:
    """terngrad with error feedback (see the module docstring): one pass for max|p|, one fused pass for
    the codes and the residual."""
    size = _checks.grad_and_residual(grad, residual)
    seed, step = _seed_step(seed, step)
    if _backend.is_torch(grad):
        codes, s = _terngrad_ef_op(grad, residual, _torch_ops.to_int64(seed), _torch_ops.to_int64(step))
    else:
        codes, s = _terngrad_ef_kernel(grad, residual, seed, step)
    return TernMsg(codes, s, size)


def _terngrad_decompress_kernel(codes, scale, size: int, dtype: str):
    out = _decompress_out(codes, size, dtype)
    _backend.module(codes).terngrad_decompress(codes, scale, out, _backend.stream(codes))
    return _backend.finish(codes, out)


_terngrad_decompress_op = _torch_ops.define(
    "terngrad_decompress", "(Tensor codes, Tensor scale, int size, str dtype) -> Tensor", _terngrad_decompress_kernel,
    lambda codes, scale, size, dtype: codes.new_empty(size, dtype=_torch_dtype(dtype)))


def terngrad_decompress(msg: TernMsg, dtype: str = "float32"):
    """The dense array of msg (values 0, +scale, -scale) in `dtype`. Code 2 (never produced) reads as 0."""
    codes, scale, size = msg
    size = _checks.integer(size, "msg.size", 0, _MAX_SIZE)
    _message_array(codes, "msg.codes", "uint8", (size + 3) // 4)
    _message_array(scale, "msg.scale", "float32", 1, codes)
    dtype = _out_dtype(dtype)
    if _backend.is_torch(codes):
        return _terngrad_decompress_op(codes, scale, size, dtype)
    return _terngrad_decompress_kernel(codes, scale, size, dtype)


# ---- QSGD -----------------------------------------------------------------------------------------------

def qsgd_code_bits(levels: int) -> int:
    """Bits per QSGD code: 1 (sign) + ceil(log2(levels + 1))."""
    return 1 + int(levels).bit_length()


def _qsgd_sizes(size: int, levels: int, bucket_size: int) -> tuple[int, int]:
    return (size * qsgd_code_bits(levels) + 7) // 8, (size + bucket_size - 1) // bucket_size


def _qsgd_kernel(x, levels: int, seed: int, step: int, bucket_size: int):
    nbytes, buckets = _qsgd_sizes(_backend.numel(x), levels, bucket_size)
    codes, norms = _backend.output_buffer(x, nbytes, "uint8"), _backend.output_buffer(x, buckets, "float32")
    seed, step = _torch_ops.to_uint64(seed), _torch_ops.to_uint64(step)
    _backend.module(x).qsgd(x, levels, bucket_size, seed, step, codes, norms, _backend.stream(x))
    return _backend.finish(x, codes), _backend.finish(x, norms)


def _qsgd_fake(x, levels, seed, step, bucket_size):
    torch = _torch_ops.torch
    nbytes, buckets = _qsgd_sizes(x.numel(), levels, bucket_size)
    return x.new_empty(nbytes, dtype=torch.uint8), x.new_empty(buckets, dtype=torch.float32)


_qsgd_op = _torch_ops.define("qsgd", "(Tensor x, int levels, int seed, int step, int bucket_size) -> (Tensor, Tensor)",
                             _qsgd_kernel, _qsgd_fake)


def _qsgd_params(levels, bucket_size) -> tuple[int, int]:
    # bucket_size: at most 2^48 - 1, what the wire format's header holds (any size past d means one bucket)
    return (_checks.integer(levels, "levels", 1, _MAX_LEVELS),
            _checks.integer(bucket_size, "bucket_size", 1, (1 << 48) - 1))


def qsgd(x, levels: int, seed: int, step: int, bucket_size: int = 512) -> QsgdMsg:
    """QSGD (Alistarh et al., 2017) with `levels` levels per bucket of `bucket_size` elements.

    Per bucket, norm = ||bucket||_2 (a fixed-order float64 sum, rounded up to float32); each element becomes
    norm * sign * xi / levels with xi the stochastic rounding of r = levels |x| / norm (probability
    r - floor(r) of rounding up; r is computed in float32, float64 for float64 inputs). Unbiased up to
    the float32 rounding of the norm (where that rounding puts r above levels, xi = levels). A bucket of
    zeros (or one holding NaN) gives zero codes. levels: 1..65535; codes take 1 + ceil(log2(levels+1))
    bits each. Each bucket is read from memory once (its norm and codes are computed while it is cached)
    when lcm(8, bucket_size) <= 65536; twice otherwise.
    """
    size = _input(x)
    levels, bucket_size = _qsgd_params(levels, bucket_size)
    seed, step = _seed_step(seed, step)
    if _backend.is_torch(x):
        codes, norms = _qsgd_op(x, levels, _torch_ops.to_int64(seed), _torch_ops.to_int64(step), bucket_size)
    else:
        codes, norms = _qsgd_kernel(x, levels, seed, step, bucket_size)
    return QsgdMsg(codes, norms, size, levels, bucket_size)


def _qsgd_ef_kernel(grad, residual, levels: int, seed: int, step: int, bucket_size: int):
    nbytes, buckets = _qsgd_sizes(_backend.numel(grad), levels, bucket_size)
    codes, norms = _backend.output_buffer(grad, nbytes, "uint8"), _backend.output_buffer(grad, buckets, "float32")
    seed, step = _torch_ops.to_uint64(seed), _torch_ops.to_uint64(step)
    _backend.module(grad).qsgd_ef(grad, residual, levels, bucket_size, seed, step, codes, norms, _backend.stream(grad))
    return codes, norms


_qsgd_ef_op = _torch_ops.define(
    "qsgd_ef_", "(Tensor grad, Tensor(a!) residual, int levels, int seed, int step, int bucket_size) -> (Tensor, Tensor)",
    _qsgd_ef_kernel, lambda grad, residual, levels, seed, step, bucket_size: _qsgd_fake(grad, levels, seed, step,
                                                                                          bucket_size),
    mutates_args=("residual",))


def qsgd_ef_(grad, residual, levels: int, seed: int, step: int, bucket_size: int = 512) -> QsgdMsg:
    """qsgd with error feedback (see the module docstring), bucket by bucket in one fused pass where the
    bucket fits (see qsgd)."""
    size = _checks.grad_and_residual(grad, residual)
    levels, bucket_size = _qsgd_params(levels, bucket_size)
    seed, step = _seed_step(seed, step)
    if _backend.is_torch(grad):
        codes, norms = _qsgd_ef_op(grad, residual, levels, _torch_ops.to_int64(seed), _torch_ops.to_int64(step),
                                   bucket_size)
    else:
        codes, norms = _qsgd_ef_kernel(grad, residual, levels, seed, step, bucket_size)
    return QsgdMsg(codes, norms, size, levels, bucket_size)


def _qsgd_decompress_kernel(codes, norms, levels: int, bucket_size: int, size: int, dtype: str):
    out = _decompress_out(codes, size, dtype)
    _backend.module(codes).qsgd_decompress(codes, norms, levels, bucket_size, out, _backend.stream(codes))
    return _backend.finish(codes, out)


_qsgd_decompress_op = _torch_ops.define(
    "qsgd_decompress", "(Tensor codes, Tensor norms, int levels, int bucket_size, int size, str dtype) -> Tensor",
    _qsgd_decompress_kernel,
    lambda codes, norms, levels, bucket_size, size, dtype: codes.new_empty(size, dtype=_torch_dtype(dtype)))


def qsgd_decompress(msg: QsgdMsg, dtype: str = "float32"):
    """The dense array of msg: sign * (norm * xi) / levels, computed in float32, rounded to `dtype`."""
    codes, norms, size, levels, bucket_size = msg
    size = _checks.integer(size, "msg.size", 0, _MAX_SIZE)
    levels, bucket_size = _qsgd_params(levels, bucket_size)
    nbytes, buckets = _qsgd_sizes(size, levels, bucket_size)
    _message_array(codes, "msg.codes", "uint8", nbytes)
    _message_array(norms, "msg.norms", "float32", buckets, codes)
    dtype = _out_dtype(dtype)
    if _backend.is_torch(codes):
        return _qsgd_decompress_op(codes, norms, levels, bucket_size, size, dtype)
    return _qsgd_decompress_kernel(codes, norms, levels, bucket_size, size, dtype)


# ---- natural compression ------------------------------------------------------------------------------

def _natural_kernel(x, seed: int, step: int):
    codes = _backend.output_buffer(x, _backend.numel(x), "uint8")
    seed, step = _torch_ops.to_uint64(seed), _torch_ops.to_uint64(step)
    _backend.module(x).natural_compress(x, seed, step, codes, _backend.stream(x))
    return _backend.finish(x, codes)


def _natural_fake(x, *args):
    return x.new_empty(x.numel(), dtype=_torch_ops.torch.uint8)


_natural_op = _torch_ops.define("natural_compress", "(Tensor x, int seed, int step) -> Tensor", _natural_kernel,
                                _natural_fake)


def natural_compress(x, seed: int, step: int) -> NaturalMsg:
    """Natural compression (Horvath et al., 2019): |x| rounded to one of its two neighbouring powers of
    two, up with probability |x| / 2^floor(log2|x|) - 1 (unbiased), one byte per element.

    The code covers 2^-99 .. 2^27: below 2^-99 the value rounds to 0 or 2^-99 (still unbiased), at or
    above 2^27 (infinities included) it is clamped to 2^27 with its sign (biased); NaN gives 0.
    """
    size = _input(x)
    seed, step = _seed_step(seed, step)
    if _backend.is_torch(x):
        codes = _natural_op(x, _torch_ops.to_int64(seed), _torch_ops.to_int64(step))
    else:
        codes = _natural_kernel(x, seed, step)
    return NaturalMsg(codes, size)


def _natural_ef_kernel(grad, residual, seed: int, step: int):
    codes = _backend.output_buffer(grad, _backend.numel(grad), "uint8")
    seed, step = _torch_ops.to_uint64(seed), _torch_ops.to_uint64(step)
    _backend.module(grad).natural_compress_ef(grad, residual, seed, step, codes, _backend.stream(grad))
    return codes


_natural_ef_op = _torch_ops.define(
    "natural_compress_ef_", "(Tensor grad, Tensor(a!) residual, int seed, int step) -> Tensor", _natural_ef_kernel,
    lambda grad, residual, seed, step: _natural_fake(grad), mutates_args=("residual",))


def natural_compress_ef_(grad, residual, seed: int, step: int) -> NaturalMsg:
    """natural_compress with error feedback (see the module docstring), in one fused pass."""
    size = _checks.grad_and_residual(grad, residual)
    seed, step = _seed_step(seed, step)
    if _backend.is_torch(grad):
        codes = _natural_ef_op(grad, residual, _torch_ops.to_int64(seed), _torch_ops.to_int64(step))
    else:
        codes = _natural_ef_kernel(grad, residual, seed, step)
    return NaturalMsg(codes, size)


def _natural_decompress_kernel(codes, dtype: str):
    out = _decompress_out(codes, _backend.numel(codes), dtype)
    _backend.module(codes).natural_decompress(codes, out, _backend.stream(codes))
    return _backend.finish(codes, out)


_natural_decompress_op = _torch_ops.define(
    "natural_decompress", "(Tensor codes, str dtype) -> Tensor", _natural_decompress_kernel,
    lambda codes, dtype: codes.new_empty(codes.numel(), dtype=_torch_dtype(dtype)))


def natural_decompress(msg: NaturalMsg, dtype: str = "float32"):
    """The dense array of msg (signed powers of two from 2^-99 to 2^27, or 0) in `dtype`: exact in
    float32 and float64; a 16-bit dtype rounds what it cannot hold to 0 or infinity."""
    codes, size = msg
    size = _checks.integer(size, "msg.size", 0, _MAX_SIZE)
    _message_array(codes, "msg.codes", "uint8", size)
    dtype = _out_dtype(dtype)
    if _backend.is_torch(codes):
        return _natural_decompress_op(codes, dtype)
    return _natural_decompress_kernel(codes, dtype)


# ---- stochastic rounding ------------------------------------------------------------------------------

def _stochastic_round_kernel(x, dtype: str, seed: int, step: int):
    out = _backend.output_buffer(x, _backend.numel(x), dtype)
    seed, step = _torch_ops.to_uint64(seed), _torch_ops.to_uint64(step)
    _backend.module(x).stochastic_round(x, seed, step, out, _backend.stream(x))
    return _backend.finish(x, out)


_stochastic_round_op = _torch_ops.define(
    "stochastic_round", "(Tensor x, str dtype, int seed, int step) -> Tensor", _stochastic_round_kernel,
    lambda x, dtype, seed, step: x.new_empty(x.numel(), dtype=_torch_dtype(dtype)))


def stochastic_round(x, dtype: str, seed: int, step: int):
    """float32 x (flattened) rounded to "bfloat16" or "float16", unbiased: between the neighbouring
    representable values lo <= |x| < hi, hi with probability (|x| - lo) / (hi - lo).

    Exact values stay; infinities stay; NaN becomes a quiet NaN. Past the largest finite value the next
    value up is infinity, taken with the probability it would have as the next power of two (float16:
    |x| >= 65536 is infinity). Returns a 1-D array of that dtype.
    """
    _checks.float_array(x, "x")
    if _backend.dtype_name(x) != "float32":
        raise TypeError(f"x: expected float32, got {_backend.dtype_name(x)}")
    _checks.integer(_backend.numel(x), "x.size", 0, _MAX_SIZE)
    if dtype not in ("bfloat16", "float16"):
        raise ValueError(f"dtype: expected 'bfloat16' or 'float16', got {dtype!r}")
    if dtype == "bfloat16" and _backend.framework(x, "x") in ("numpy", "jax"):
        raise TypeError("dtype: NumPy has no bfloat16: use torch tensors for bfloat16 output (float16 works)")
    seed, step = _seed_step(seed, step)
    if _backend.is_torch(x):
        return _stochastic_round_op(x, dtype, _torch_ops.to_int64(seed), _torch_ops.to_int64(step))
    return _stochastic_round_kernel(x, dtype, seed, step)
