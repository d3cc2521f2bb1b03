// Host+device math of the quantizers: sign, TernGrad, QSGD, natural compression, stochastic rounding.
//
// Everything that decides a code or a decoded value lives here, in CK_HD functions, so that the CPU and
// the CUDA launches produce the same bits.
//
// Random draws. Element i draws the 32-bit word  word(i) = philox(seed, step, a, b).v[i % 4]  with
//   a = (i / 4) mod 2^32,   b = (tag << 24) | (i / 2^34),
// where tag is one byte per kernel (kTag* below), so that the kernels' streams never overlap. (One Philox
// block serves four consecutive elements.) A Bernoulli(p) event is  U < p  with U = word / 2^32, compared
// exactly (in double: word and p * 2^32 are both exact there).
//
// Reductions (the sign scale, TernGrad's max, QSGD's bucket norms) have a fixed order that depends only
// on the data's size: sums in double over blocks of kNormBlock elements (or over one QSGD bucket; 16
// lanes, lane = index mod 16, lanes added in order), block sums added in block order. So results do not depend on the thread count,
// and the CPU and the GPU give the same bits.
//
// Arithmetic that decides a code is written so that no compiler may contract it into an FMA (mul_rn:
// nvcc contracts by default; the host build targets x86-64 without FMA).
#pragma once

#include <cmath>

#include "../common/half.h"
#include "../common/philox.h"

namespace ck {

constexpr uint32_t kTagQsgd = 0x51;              // 'Q'
constexpr uint32_t kTagTerngrad = 0x54;          // 'T'
constexpr uint32_t kTagNatural = 0x4E;           // 'N'
constexpr uint32_t kTagStochasticRound = 0x52;   // 'R'
constexpr int64_t kNormBlock = 1 << 14;          // elements per partial sum of the sign scale
constexpr int kLanes = 16;

// Philox block that serves elements 4q .. 4q+3 of kernel `tag`.
CK_HD Philox4x32 quant_draws(uint64_t seed, uint64_t step, uint32_t tag, uint64_t q) {
  return philox(seed, step, uint32_t(q), (tag << 24) | uint32_t(q >> 32));
}

// U < p with U = word / 2^32, exactly.
CK_HD bool bernoulli(uint32_t word, double p) { return double(word) < p * 4294967296.0; }

CK_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
CK_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

CK_HD float sqrt_acc(float v) {
#if defined(__CUDA_ARCH__)
  return sqrtf(v);
#else
  return std::sqrt(v);
#endif
}
CK_HD double sqrt_acc(double v) {
#if defined(__CUDA_ARCH__)
  return ::sqrt(v);
#else
  return std::sqrt(v);
#endif
}
CK_HD float floor_acc(float v) {
#if defined(__CUDA_ARCH__)
  return floorf(v);
#else
  return std::floor(v);
#endif
}
CK_HD double floor_acc(double v) {
#if defined(__CUDA_ARCH__)
  return ::floor(v);
#else
  return std::floor(v);
#endif
}

CK_HD float abs_acc(float v) { return bit_cast<float>(bit_cast<uint32_t>(v) & 0x7fffffffu); }
CK_HD double abs_acc(double v) { return bit_cast<double>(bit_cast<uint64_t>(v) & 0x7fffffffffffffffull); }

// |v| as an unsigned integer whose order is the order of |v| (NaN above +inf): a NaN-propagating max
// that vectorises and does not depend on the order of the elements.
CK_HD uint32_t magnitude_key(float v) { return bit_cast<uint32_t>(v) & 0x7fffffffu; }
CK_HD uint64_t magnitude_key(double v) { return bit_cast<uint64_t>(v) & 0x7fffffffffffffffull; }
CK_HD float key_value(uint32_t k) { return bit_cast<float>(k); }
CK_HD double key_value(uint64_t k) { return bit_cast<double>(k); }

// The smallest float32 >= v for v >= 0 (inf beyond the float range; NaN stays NaN): a float64 maximum
// or norm rounded up, so that |x| / scale <= 1 still holds in the float32 message.
CK_HD float round_up_to_float(double v) {
  float f = float(v);
  if (double(f) < v) f = bit_cast<float>(bit_cast<uint32_t>(f) + 1u);
  return f;
}
CK_HD float round_up_to_float(float v) { return v; }

// ---- element loaders: x alone, or p = residual + grad (error feedback) --------------------------------

template <class T>
struct LoadX {
  const T* x;
  CK_HD acc_t<T> operator()(int64_t i) const { return to_acc(x[i]); }
};

// p = residual + grad in A (acc_t of the residual's dtype).
template <class G, class R>
struct LoadSum {
  using A = acc_t<R>;
  const G* grad;
  const R* residual;
  CK_HD A operator()(int64_t i) const { return A(to_acc(residual[i])) + A(to_acc(grad[i])); }
};

// ---- fixed-order reductions ---------------------------------------------------------------------------

enum class NormKind { l1 = 1, l2 = 2 };

// sum over [begin, end) of |p| (l1) or p^2 (l2), in double (a float32 sum of squares overflows from
// |p| ~ 2^64 on, and even a sum of |p| can overflow where the mean does not) with kLanes lanes
// (lane = index mod kLanes counted from begin) added in lane order.
template <class Load>
CK_HD double block_norm_sum(const Load& load, int64_t begin, int64_t end, NormKind kind) {
  double lane[kLanes];
  for (int l = 0; l < kLanes; ++l) lane[l] = 0.0;
  int64_t i = begin;
  if (kind == NormKind::l1) {
    for (; i + kLanes <= end; i += kLanes)
      for (int l = 0; l < kLanes; ++l) lane[l] += abs_acc(double(load(i + l)));
    for (int l = 0; i < end; ++i, ++l) lane[l] += abs_acc(double(load(i)));
  } else {
    for (; i + kLanes <= end; i += kLanes)
      for (int l = 0; l < kLanes; ++l) {
        const double v = load(i + l);
        lane[l] += mul_rn(v, v);
      }
    for (int l = 0; i < end; ++i, ++l) {
      const double v = load(i);
      lane[l] += mul_rn(v, v);
    }
  }
  double sum = 0.0;
  for (int l = 0; l < kLanes; ++l) sum += lane[l];
  return sum;
}

// The sign scale from the block sums (added in double in block order): l1: sum|p| / d; l2:
// sqrt(sum p^2 / d); as float32. d = 0 gives 0.
CK_HD float sign_scale_from_total(double total, int64_t size, NormKind kind) {
  if (size == 0) return 0.0f;
  const double mean = total / double(size);
  return float(kind == NormKind::l1 ? mean : sqrt_acc(mean));
}

// ---- sign: bit j of byte b is element 8b + j; 1 means p < 0 (so +0, -0 and NaN give 0, i.e. +1) --------

template <class Load>
CK_HD uint8_t sign_byte(const Load& load, int64_t byte, int64_t size) {
  const int64_t begin = byte * 8;
  const int n = size - begin < 8 ? int(size - begin) : 8;
  uint32_t bits = 0;
  for (int j = 0; j < n; ++j) bits |= uint32_t(load(begin + j) < 0) << j;
  return uint8_t(bits);
}

// Decoded values are built from bits, not chosen by a branch on the (random) sign: a branch would be
// mispredicted half the time.
CK_HD float with_sign_bit(float magnitude, uint32_t negative) {
  return bit_cast<float>(bit_cast<uint32_t>(magnitude) ^ (negative << 31));
}

CK_HD float sign_value(uint8_t byte, int j, float scale) { return with_sign_bit(scale, (byte >> j) & 1u); }

// ---- TernGrad: 2 bits per element, element 4b + j in bits 2j, 2j+1 of byte b --------------------------
// code bit 0: sent (|value| = scale), code bit 1: negative. Codes are 0 (zero), 1 (+scale), 3 (-scale).
// Element i is sent with probability |p_i| / scale: U(word(i)) < |p_i| / scale, the ratio in A.

template <class A>
CK_HD uint32_t terngrad_code(A v, A scale, uint32_t word) {
  // branch-free: the outcome is random, a branch on it would be mispredicted half the time
  const uint32_t sent = uint32_t(scale > A(0)) & uint32_t(bernoulli(word, double(abs_acc(v) / scale)));
  return sent * (1u + 2u * uint32_t(v < A(0)));
}

// Byte b of the codes, from the four words of Philox block b.
template <class Load>
CK_HD uint8_t terngrad_byte_from(const Load& load, int64_t byte, int64_t size, float scale, const uint32_t* words) {
  using A = decltype(load(0));
  const int64_t begin = byte * 4;
  const int n = size - begin < 4 ? int(size - begin) : 4;
  uint32_t bits = 0;
  for (int j = 0; j < n; ++j) bits |= terngrad_code(load(begin + j), A(scale), words[j]) << (2 * j);
  return uint8_t(bits);
}

template <class Load>
CK_HD uint8_t terngrad_byte(const Load& load, int64_t byte, int64_t size, float scale, uint64_t seed,
                            uint64_t step) {
  const Philox4x32 r = quant_draws(seed, step, kTagTerngrad, uint64_t(byte));
  return terngrad_byte_from(load, byte, size, scale, r.v);
}

CK_HD float terngrad_value(uint8_t byte, int j, float scale) {
  const uint32_t code = (byte >> (2 * j)) & 3u, sent = code & 1u;
  const float magnitude = bit_cast<float>(bit_cast<uint32_t>(scale) & (0u - sent));  // scale or +0
  return with_sign_bit(magnitude, sent & (code >> 1));
}

// ---- QSGD: per bucket, norm = ||p_bucket||_2 (float32); element code = sign bit | xi << 1 ------------
// r = |p| * levels / norm (in A); xi = floor(r) + (U < r - floor(r)), at most levels. Codes are
// qsgd_code_bits(levels) = 1 + ceil(log2(levels + 1)) bits, packed LSB first: element i occupies bits
// [i w, (i+1) w) of the byte stream (bit k of the stream is bit k % 8 of byte k / 8). Eight elements
// fill exactly w bytes, so a group of eight is the unit of work.

CK_HD int qsgd_code_bits(int64_t levels) {
  int w = 0;
  while ((int64_t(1) << w) < levels + 1) ++w;
  return 1 + w;
}

// The bucket's L2 norm (block_norm_sum in double) rounded up to float32, so that |p| / norm <= 1 (up to
// the rounding of the sum).
template <class Load>
CK_HD float qsgd_bucket_norm(const Load& load, int64_t begin, int64_t end) {
  return round_up_to_float(sqrt_acc(block_norm_sum(load, begin, end, NormKind::l2)));
}

template <class A>
CK_HD uint32_t qsgd_code(A v, float norm, int64_t levels, uint32_t word) {
  if (!(norm > 0.0f)) return 0u;  // zero bucket (or a NaN norm): all codes zero
  const A r = mul_rn(abs_acc(v), A(levels)) / A(norm);
  if (!(r < A(levels))) return uint32_t(levels) << 1 | uint32_t(v < A(0));  // r >= levels (or NaN)
  const A low = floor_acc(r);
  const uint32_t xi = uint32_t(low) + uint32_t(bernoulli(word, double(r - low)));
  return (xi << 1 | uint32_t(v < A(0))) & (0u - uint32_t(xi != 0));  // branch-free: 0 when xi = 0
}

CK_HD float qsgd_value(uint32_t code, float norm, int64_t levels) {
  return with_sign_bit(mul_rn(norm, float(code >> 1)) / float(levels), code & 1u);
}

// Bit writer / reader for w-bit codes (w <= 17), LSB first.
struct BitWriter {
  uint8_t* out;
  uint64_t acc = 0;
  int count = 0;
  CK_HD void put(uint32_t code, int w) {
    acc |= uint64_t(code) << count;
    count += w;
    while (count >= 8) {
      *out++ = uint8_t(acc);
      acc >>= 8;
      count -= 8;
    }
  }
  CK_HD void flush() {
    if (count > 0) *out++ = uint8_t(acc);
    acc = 0;
    count = 0;
  }
};

struct BitReader {
  const uint8_t* in;
  const uint8_t* end;
  uint64_t acc = 0;
  int count = 0;
  CK_HD uint32_t get(int w) {
    while (count < w) {
      acc |= uint64_t(in < end ? *in : 0) << count;
      ++in;
      count += 8;
    }
    const uint32_t code = uint32_t(acc & ((uint64_t(1) << w) - 1));
    acc >>= w;
    count -= w;
    return code;
  }
};

// Bytes of the packed codes of `size` elements of w bits.
CK_HD int64_t packed_bytes(int64_t size, int w) { return (size * w + 7) / 8; }

// ---- natural compression: one byte per element ---------------------------------------------------------
// code 0: zero; otherwise bit 7 is the sign and c = bits 0-6 (1..127) stands for 2^(c - kNaturalBias).
// |p| in [2^e, 2^(e+1)) rounds up to 2^(e+1) with probability |p| / 2^e - 1, else down to 2^e (unbiased).
// Below 2^kNaturalMinExp it rounds to 0 or 2^kNaturalMinExp (probability |p| / 2^kNaturalMinExp: still
// unbiased); at or above 2^kNaturalMaxExp (inf included) it is clamped to 2^kNaturalMaxExp (biased);
// NaN gives code 0.

constexpr int kNaturalBias = 100;
constexpr int kNaturalMinExp = 1 - kNaturalBias;    // 2^-99
constexpr int kNaturalMaxExp = 127 - kNaturalBias;  // 2^27

CK_HD int exponent_of(float a) { return int((bit_cast<uint32_t>(a) >> 23) & 0xffu) - 127; }
CK_HD int exponent_of(double a) { return int((bit_cast<uint64_t>(a) >> 52) & 0x7ffu) - 1023; }
CK_HD float pow2_as(float, int e) { return bit_cast<float>(uint32_t(127 + e) << 23); }
CK_HD double pow2_as(double, int e) { return bit_cast<double>(uint64_t(1023 + e) << 52); }

template <class A>
CK_HD uint8_t natural_code(A v, uint32_t word) {
  const A a = abs_acc(v);
  if (!(a == a)) return 0;  // NaN
  const uint8_t sign = v < A(0) ? 0x80 : 0;
  if (a >= pow2_as(A(0), kNaturalMaxExp)) return uint8_t(sign | 127);
  if (a < pow2_as(A(0), kNaturalMinExp)) {
    const A p = mul_rn(a, pow2_as(A(0), -kNaturalMinExp));  // exact
    return uint8_t((sign | 1) * uint32_t(bernoulli(word, double(p))));
  }
  const int e = exponent_of(a);
  const A frac = mul_rn(a, pow2_as(A(0), -e)) - A(1);  // exact
  return uint8_t(sign | (e + kNaturalBias + int(bernoulli(word, double(frac)))));
}

CK_HD float natural_value(uint8_t code) {
  const uint32_t c = code & 0x7fu;  // 2^(c - bias) has the float32 exponent field c - bias + 127 (0: zero)
  const uint32_t field = (c + uint32_t(127 - kNaturalBias)) & (0u - uint32_t(c != 0));
  return with_sign_bit(bit_cast<float>(field << 23), uint32_t(code >> 7));
}

// ---- stochastic rounding of float32 to bfloat16 / float16 ---------------------------------------------
// |x| between the neighbouring representable magnitudes lo <= |x| < hi rounds to hi with probability
// (|x| - lo) / (hi - lo), i.e. U < that fraction. The fraction is rem / 2^shift for the bits dropped;
// U < rem / 2^shift  <=>  floor(word / 2^(32 - shift)) < rem  (shift <= 32), or word < ceil(rem / 2^(shift-32)).
// Infinities stay, NaN becomes a quiet NaN. Beyond the largest finite value the next value up is taken
// to be the next power of two's encoding, which is infinity.

CK_HD bool round_up_dropped(uint32_t word, uint32_t rem, int shift) {
  if (shift <= 32) return uint64_t(word) >> (32 - shift) < uint64_t(rem);
  const int k = shift - 32;
  const uint64_t threshold = k >= 32 ? uint64_t(rem != 0) : (uint64_t(rem) + (uint64_t(1) << k) - 1) >> k;
  return uint64_t(word) < threshold;
}

CK_HD bfloat16 stochastic_round_bf16(float v, uint32_t word) {
  const uint32_t b = bit_cast<uint32_t>(v);
  if ((b & 0x7fffffffu) > 0x7f800000u) return bfloat16{uint16_t((b >> 16) | 0x40u)};
  if ((b & 0x7fffffffu) == 0x7f800000u) return bfloat16{uint16_t(b >> 16)};
  return bfloat16{uint16_t((b >> 16) + uint32_t(round_up_dropped(word, b & 0xffffu, 16)))};
}

CK_HD float16 stochastic_round_fp16(float v, uint32_t word) {
  const uint32_t b = bit_cast<uint32_t>(v);
  const uint16_t sign = uint16_t((b >> 16) & 0x8000u);
  const uint32_t abs = b & 0x7fffffffu;
  if (abs > 0x7f800000u) return float16{uint16_t(sign | 0x7e00u)};
  if (abs >= 0x47800000u) return float16{uint16_t(sign | 0x7c00u)};  // >= 65536 (and inf): inf
  uint32_t h, rem;
  int shift;
  if (abs >= 0x38800000u) {  // half normal range: drop 13 mantissa bits
    h = (abs - 0x38000000u) >> 13;
    rem = abs & 0x1fffu;
    shift = 13;
  } else {  // half subnormal (units of 2^-24): |x| 2^24 = m 2^-shift
    const uint32_t exp = abs >> 23;
    const uint32_t m = exp == 0 ? (abs & 0x7fffffu) : ((abs & 0x7fffffu) | 0x800000u);
    shift = exp == 0 ? 125 : int(126 - exp);
    h = shift >= 32 ? 0u : m >> shift;
    rem = shift >= 32 ? m : (m & ((1u << shift) - 1u));
  }
  return float16{uint16_t(sign | (h + uint32_t(round_up_dropped(word, rem, shift))))};
}

}  // namespace ck
