"""Reference (NumPy, float64) of ``commkernels.compress``: the executable specification.

Written from the definitions in ``shared/specs/compress.md``, ``csrc/common/philox.h`` (the Philox stream)
and ``csrc/compress/randk.h`` (the Feistel permutation that rand-k draws from). Speed is not a goal;
being obviously right is. Every function takes NumPy arrays of any shape and works on their flattened
(C-order) view. bfloat16 has no NumPy dtype: pass bfloat16 data as float32 (exact), and tell
``ef_topk`` with ``residual_dtype="bfloat16"`` where a result must be rounded to bfloat16.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "philox4x32_10", "philox", "feistel_permutation", "randk_indices", "topk", "ef_topk", "randk",
    "decompress", "round_to_bfloat16",
]

_FLOAT_DTYPES = ("float16", "float32", "float64")

# ---- Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as 1, 2, 3", SC'11) ---

_PHILOX_M = (0xD2511F53, 0xCD9E8D57)  # round multipliers
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)  # Weyl sequence that bumps the key between rounds
_MASK32 = 0xFFFFFFFF


def _words(values, name: str) -> list[np.ndarray]:
    out = []
    for v in values:
        a = np.asarray(v)
        if a.dtype.kind not in "iu":
            raise TypeError(f"{name}: expected unsigned 32-bit integers, got {a.dtype}")
        if a.size and (int(a.min()) < 0 or int(a.max()) > _MASK32):
            raise ValueError(f"{name}: words must lie in [0, 2^32)")
        out.append(a.astype(np.uint64))
    return out


def philox4x32_10(ctr, key) -> np.ndarray:
    """The Philox4x32 block function with 10 rounds.

    ctr: 4 counter words, key: 2 key words; each an int in [0, 2^32) or an integer array (all broadcast
    together, so many counters are evaluated at once). Returns the 4 output words as a uint32 array of
    shape (4, *broadcast shape).

    One round (Random123's philox4x32round): with (hi0, lo0) = M0 * c0 and (hi1, lo1) = M1 * c2 as 64-bit
    products, c <- (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0); the key is bumped by the Weyl constants
    (mod 2^32) before every round but the first.
    """
    if len(ctr) != 4 or len(key) != 2:
        raise ValueError("philox4x32_10: expected a 4-word counter and a 2-word key")
    c0, c1, c2, c3 = _words(ctr, "ctr")
    k0, k1 = _words(key, "key")
    m0, m1 = np.uint64(_PHILOX_M[0]), np.uint64(_PHILOX_M[1])
    w0, w1 = np.uint64(_PHILOX_W[0]), np.uint64(_PHILOX_W[1])
    mask, shift = np.uint64(_MASK32), np.uint64(32)
    for round_ in range(10):
        if round_ > 0:
            k0, k1 = (k0 + w0) & mask, (k1 + w1) & mask
        p0, p1 = m0 * c0, m1 * c2  # < 2^64: exact in uint64
        c0, c1, c2, c3 = (p1 >> shift) ^ c1 ^ k0, p1 & mask, (p0 >> shift) ^ c3 ^ k1, p0 & mask
    c0, c1, c2, c3 = np.broadcast_arrays(c0, c1, c2, c3)
    return np.stack([c0, c1, c2, c3]).astype(np.uint32)


def philox(seed: int, step: int, a, b) -> np.ndarray:
    """The stream every stochastic kernel draws from: counter (a, b, step lo, step hi), key (seed lo, seed hi).

    seed, step: ints in [0, 2^64); a, b: 32-bit words (ints or arrays). Returns philox4x32_10's (4, ...) words.
    """
    seed, step = _uint64(seed, "seed"), _uint64(step, "step")
    return philox4x32_10((a, b, step & _MASK32, step >> 32), (seed & _MASK32, seed >> 32))


def _uint64(value, name: str) -> int:
    value = int(value)
    if not 0 <= value < 1 << 64:
        raise ValueError(f"{name}: expected an integer in [0, 2^64), got {value}")
    return value


# ---- rand-k: a keyed pseudo-random permutation of [0, size) --------------------------------------------

def _word_bits(size: int) -> int:
    return max(1, max(size - 1, 0).bit_length())  # ceil(log2(size)), at least 1


def _feistel_encrypt(words: np.ndarray, seed: int, step: int, bits: int) -> np.ndarray:
    """A 4-round Feistel network on `bits`-bit words split into hi (bits - bits//2) and lo (bits//2) parts:
    even rounds hi ^= philox(seed, step, lo, r)[0], odd rounds lo ^= philox(seed, step, hi, r)[0] (masked)."""
    lo_bits = bits // 2
    lo_mask, hi_mask = np.uint64((1 << lo_bits) - 1), np.uint64((1 << (bits - lo_bits)) - 1)
    hi, lo = words >> np.uint64(lo_bits), words & lo_mask
    for r in range(4):
        if r % 2 == 0:
            hi = hi ^ (philox(seed, step, lo, r)[0].astype(np.uint64) & hi_mask)
        else:
            lo = lo ^ (philox(seed, step, hi, r)[0].astype(np.uint64) & lo_mask)
    return (hi << np.uint64(lo_bits)) | lo


def feistel_permutation(size: int, seed: int, step: int, i) -> np.ndarray:
    """perm(i) for the permutation of [0, size) keyed by (seed, step) (int64, i's shape).

    perm(i) encrypts i with the Feistel network on ceil(log2 size)-bit words and re-encrypts (cycle
    walking) while the word is >= size.
    """
    i = np.asarray(i, dtype=np.int64)
    if np.any(i < 0) or np.any(i >= size):
        raise ValueError(f"i: expected 0 <= i < size ({size})")
    bits = _word_bits(size)
    word = _feistel_encrypt(i.astype(np.uint64).reshape(-1), seed, step, bits)
    while True:
        outside = word >= np.uint64(size)
        if not outside.any():
            return word.astype(np.int64).reshape(i.shape)
        word[outside] = _feistel_encrypt(word[outside], seed, step, bits)


def randk_indices(size: int, k: int, seed: int, step: int) -> np.ndarray:
    """S = sorted {perm(0), ..., perm(k-1)} as int32: the k distinct indices rand-k keyed (seed, step) selects."""
    if not 0 <= k <= size:
        raise ValueError(f"k: expected 0 <= k <= size ({size}), got {k}")
    return np.sort(feistel_permutation(size, seed, step, np.arange(k))).astype(np.int32)


def randk(x, k: int, seed: int, step: int, unbiased: bool = True):
    """(values, indices): indices = randk_indices(x.size, k, seed, step), values = x[indices] * size/k
    (unbiased, k > 0) or x[indices], multiplied in float64 and rounded once to x's dtype."""
    flat = _flat_float(x, "x")
    indices = randk_indices(flat.size, k, seed, step)
    scale = flat.size / k if unbiased and k > 0 else 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        values = (flat[indices].astype(np.float64) * scale).astype(flat.dtype)
    return values, indices


# ---- top-k ---------------------------------------------------------------------------------------------

def topk(x, k: int):
    """(values, indices): the k entries of largest |x| of the flattened x.

    Order of preference: NaN first (every NaN counts as the largest magnitude, NaNs tie with each other),
    then larger |x| (so +0 and -0 tie, as do v and -v), then the lower index. indices: ascending int32;
    values = x[indices] in x's dtype.
    """
    flat = _flat_float(x, "x")
    if not 0 <= k <= flat.size:
        raise ValueError(f"k: expected 0 <= k <= size ({flat.size}), got {k}")
    with np.errstate(invalid="ignore"):  # signalling NaNs
        magnitude = np.abs(flat.astype(np.float64))
    is_nan = np.isnan(magnitude)
    # np.lexsort: the last key is the primary one; every key ascending, and the sort is stable.
    order = np.lexsort((np.arange(flat.size), -np.where(is_nan, 0.0, magnitude), ~is_nan))
    indices = np.sort(order[:k]).astype(np.int32)
    return flat[indices], indices


def round_to_bfloat16(a) -> np.ndarray:
    """The bfloat16 nearest to each float32 value (ties to even), returned as float32 (exact).

    Overflow follows IEEE: a magnitude at or beyond max + half an ulp becomes inf. NaN stays NaN.
    """
    a = np.ascontiguousarray(a, dtype=np.float32)
    bits = a.view(np.uint32)
    sign = bits & np.uint32(0x80000000)
    mag_bits = bits & np.uint32(0x7FFFFFFF)
    lo_bits = mag_bits & np.uint32(0xFFFF0000)  # largest bfloat16 magnitude <= |a|
    hi_bits = lo_bits + np.uint32(0x10000)      # next bfloat16 magnitude up (inf above the largest finite)
    mag = mag_bits.view(np.float32).astype(np.float64)
    lo = lo_bits.view(np.float32).astype(np.float64)
    with np.errstate(invalid="ignore"):
        hi = np.where(hi_bits == np.uint32(0x7F800000), 2.0 ** 128, hi_bits.view(np.float32).astype(np.float64))
        below, above = mag - lo, hi - mag
    lo_is_even = ((lo_bits >> np.uint32(16)) & np.uint32(1)) == 0
    take_hi = (above < below) | ((above == below) & ~lo_is_even)
    rounded = (np.where(take_hi, hi_bits, lo_bits) | sign).view(np.float32)
    return np.where(np.isfinite(a), rounded, a)


def _round_to(p: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return round_to_bfloat16(p)
    with np.errstate(over="ignore", invalid="ignore"):
        return p.astype(dtype)


def ef_topk(grad, residual, k: int, residual_dtype: str | None = None):
    """(values, indices, new_residual) of top-k with error feedback (EF14). Modifies nothing.

    p = residual + grad, added in float32 (float64 when the residual is float64) and rounded to the
    residual's dtype; (values, indices) = topk(p, k); new_residual = p with the k sent entries set to +0.
    residual_dtype: "bfloat16" when residual holds bfloat16 values as float32 (p is then rounded to
    bfloat16 and returned as float32); default: residual's own dtype.
    """
    g, r = _flat_float(grad, "grad"), _flat_float(residual, "residual")
    if g.size != r.size:
        raise ValueError(f"residual: expected {g.size} elements like grad, got {r.size}")
    store = residual_dtype or r.dtype.name
    acc = np.float64 if store == "float64" else np.float32
    with np.errstate(over="ignore", invalid="ignore"):
        p = _round_to(r.astype(acc) + g.astype(acc), store)
    values, indices = topk(p, k)
    new_residual = p.copy()
    new_residual[indices] = 0
    return values, indices, new_residual


# ---- messages ------------------------------------------------------------------------------------------

def decompress(values, indices, size: int) -> np.ndarray:
    """The dense size-element array with values at indices and zero elsewhere."""
    values, indices = np.asarray(values).reshape(-1), np.asarray(indices).reshape(-1)
    if values.size != indices.size:
        raise ValueError(f"{values.size} values but {indices.size} indices")
    if indices.size and (indices.min() < 0 or indices.max() >= size):
        raise ValueError(f"indices: expected 0 <= index < size ({size})")
    out = np.zeros(size, dtype=values.dtype)
    out[indices] = values
    return out


def _flat_float(x, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array, got {type(x).__name__}")
    if x.dtype.name not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: expected float16, float32 or float64, got {x.dtype}")
    return x.reshape(-1)
