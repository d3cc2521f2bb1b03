// The quantizers on the CPU: OpenMP over independent output bytes (or groups of eight elements), with
// the fixed-order reductions of quantize.h for the scales, so that results do not depend on the thread
// count. Error-feedback variants re-read grad and residual in the quantizing pass rather than storing p,
// which keeps p unrounded and moves the same bytes.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

#include "../common/cpu_features.h"
#include "../common/fresh_pages.h"
#include "../common/parallel.h"
#include "../common/philox_x8.h"
#include "quantize.h"
#include "quantize_api.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int64_t kByteGrain = 1 << 13;  // output bytes per parallel grain

// ---- AVX-512 versions of the sign kernel's two passes, for float32 and bfloat16 x ------------------------
// Bitwise the same as the portable code: the sums keep block_norm_sum's 16 lanes (two vectors of 8
// doubles: lanes 0-7 and 8-15), the tail goes to lanes 0.. in order, and the lanes are added in order.
// Squares use an explicitly rounded multiply, which no compiler contracts into an FMA.

template <class T> constexpr bool kHasSignAvx512 = std::is_same_v<T, float> || std::is_same_v<T, bfloat16>;
template <class Load> constexpr bool kIsLoadX = false;
template <class T> constexpr bool kIsLoadX<LoadX<T>> = true;

#ifdef CK_AVX512
template <class T>
CK_AVX512 inline __m512 load16_avx512(const T* x) {
  if constexpr (std::is_same_v<T, float>) {
    return _mm512_loadu_ps(x);
  } else {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
}

template <class T>
CK_AVX512 double block_norm_sum_avx512(const T* x, int64_t begin, int64_t end, NormKind kind) {
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  const __m512 sign_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    __m512 v = load16_avx512(x + i);
    __m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    __m512d b = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    if (kind == NormKind::l1) {
      v = _mm512_and_ps(v, sign_mask);
      a = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
      b = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    } else {
      a = _mm512_mul_round_pd(a, a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      b = _mm512_mul_round_pd(b, b, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    lo = _mm512_add_pd(lo, a);
    hi = _mm512_add_pd(hi, b);
  }
  double lane[kLanes];
  _mm512_storeu_pd(lane, lo);
  _mm512_storeu_pd(lane + 8, hi);
  for (int l = 0; i < end; ++i, ++l) {
    const double v = to_acc(x[i]);
    lane[l] += kind == NormKind::l1 ? abs_acc(v) : v * v;
  }
  double sum = 0.0;
  for (int l = 0; l < kLanes; ++l) sum += lane[l];
  return sum;
}

// bits[b0, b1) for full bytes (8 (b1 - b0) <= size - 8 b0).
template <class T>
CK_AVX512 void sign_pack_avx512(const T* x, int64_t b0, int64_t b1, uint8_t* bits) {
  int64_t b = b0;
  if constexpr (std::is_same_v<T, float>) {
    for (; b + 2 <= b1; b += 2) {
      const uint16_t m = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + 8 * b), _mm512_setzero_ps(), _CMP_LT_OQ);
      memcpy(bits + b, &m, 2);
    }
  } else {
    // bfloat16 v < 0: sign set, magnitude in (0, inf]: the bits, less 0x8001, at most 0x7f7f unsigned
    const __m512i offset = _mm512_set1_epi16(int16_t(0x8001)), limit = _mm512_set1_epi16(0x7f7f);
    for (; b + 4 <= b1; b += 4) {
      const __m512i v = _mm512_loadu_si512(x + 8 * b);
      const uint32_t m = _mm512_cmple_epu16_mask(_mm512_sub_epi16(v, offset), limit);
      memcpy(bits + b, &m, 4);
    }
  }
  const LoadX<T> load{x};
  for (; b < b1; ++b) bits[b] = sign_byte(load, b, int64_t(b1) * 8);
}
#endif

// ---- the Philox words of many blocks at once ------------------------------------------------------------
// words[4 k + j] = quant_draws(seed, step, tag, q0 + k).v[j] for k < n: element 4 (q0 + k) + j's word.

constexpr int64_t kDrawTile = 64;  // Philox blocks per tile: 256 elements

#ifdef CK_AVX512
CK_AVX512 void fill_draws_avx512(uint64_t seed, uint64_t step, uint32_t tag, uint64_t q0, int64_t n, uint32_t* words) {
  int64_t k = 0;
  for (; k + 32 <= n; k += 32) {
    const uint64_t q = q0 + uint64_t(k);
    if ((q >> 32) != ((q + 31) >> 32)) break;  // b differs across the counters: leave it to the scalar loop
    philox_words_x8<4>(seed, step, uint32_t(q), (tag << 24) | uint32_t(q >> 32), words + 4 * k);
  }
  for (; k + 8 <= n; k += 8) {
    const uint64_t q = q0 + uint64_t(k);
    if ((q >> 32) != ((q + 7) >> 32)) break;
    philox_words_x8<1>(seed, step, uint32_t(q), (tag << 24) | uint32_t(q >> 32), words + 4 * k);
  }
  for (; k < n; ++k) {
    const Philox4x32 block = quant_draws(seed, step, tag, q0 + uint64_t(k));
    memcpy(words + 4 * k, block.v, 16);
  }
}
#endif

#ifdef CK_AVX512
// TernGrad codes of 4 n elements of x (from element 4 b0; all inside x) with their words: 16 at a time,
// the same operations as terngrad_code (a float32 division, an exact comparison in double).
template <class T>
CK_AVX512 void terngrad_tile_avx512(const T* x, int64_t b0, int64_t n, float scale, const uint32_t* words,
                                    uint8_t* codes) {
  const __m512 sign_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff)), s = _mm512_set1_ps(scale);
  const __m512d two32 = _mm512_set1_pd(4294967296.0);
  const uint32_t live = scale > 0.0f ? 0xffffffffu : 0u;
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) {  // 16 elements, 4 bytes
    const __m512 v = load16_avx512(x + 4 * (b0 + k));
    const __m512 p = _mm512_div_ps(_mm512_and_ps(v, sign_mask), s);
    const __m512i w = _mm512_loadu_si512(words + 4 * k);
    const __m512d plo = _mm512_mul_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(p)), two32);
    const __m512d phi = _mm512_mul_pd(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(p), 1))), two32);
    const __m512d wlo = _mm512_cvtepu32_pd(_mm512_castsi512_si256(w));
    const __m512d whi = _mm512_cvtepu32_pd(_mm512_extracti64x4_epi64(w, 1));
    const uint32_t sent = (uint32_t(_mm512_cmp_pd_mask(wlo, plo, _CMP_LT_OQ)) |
                           uint32_t(_mm512_cmp_pd_mask(whi, phi, _CMP_LT_OQ)) << 8) & live;
    const uint32_t negative = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
    const uint32_t bits = _pdep_u32(sent, 0x55555555u) | _pdep_u32(sent & negative, 0xAAAAAAAAu);
    memcpy(codes + b0 + k, &bits, 4);
  }
  const LoadX<T> load{x};
  for (; k < n; ++k) codes[b0 + k] = terngrad_byte_from(load, b0 + k, 4 * (b0 + n), scale, words + 4 * k);
}

template <class T>
CK_AVX512 uint32_t max_key_avx512(const T* x, int64_t begin, int64_t end) {
  __m512i m = _mm512_setzero_si512();
  const __m512i mask = _mm512_set1_epi32(0x7fffffff);
  int64_t i = begin;
  for (; i + 16 <= end; i += 16) m = _mm512_max_epu32(m, _mm512_and_si512(_mm512_castps_si512(load16_avx512(x + i)), mask));
  alignas(64) uint32_t lanes[16];  // (not _mm512_reduce_max_epu32: GCC 12's header trips -Wuninitialized)
  _mm512_store_si512(lanes, m);
  uint32_t r = *std::max_element(lanes, lanes + 16);
  for (; i < end; ++i) r = std::max(r, magnitude_key(float(to_acc(x[i]))));
  return r;
}
#endif

#ifdef CK_AVX512
// natural_code of n elements of x (from element i0), 16 at a time. In the float32 range the comparison
// U < |x| / 2^e - 1 = mantissa / 2^23 is exactly word < mantissa << 9 (both integers).
template <class T>
CK_AVX512 void natural_codes_avx512(const T* x, int64_t i0, int64_t n, const uint32_t* words, uint8_t* codes) {
  const __m512i magnitude_mask = _mm512_set1_epi32(0x7fffffff), mantissa_mask = _mm512_set1_epi32(0x7fffff);
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i min_bits = _mm512_set1_epi32((127 + kNaturalMinExp) << 23);
  const __m512i max_bits = _mm512_set1_epi32((127 + kNaturalMaxExp) << 23);
  const __m512i nan_above = _mm512_set1_epi32(0x7f800000);
  const __m512 scale_tiny = _mm512_set1_ps(pow2_as(0.0f, -kNaturalMinExp));
  const __m512d two32 = _mm512_set1_pd(4294967296.0);
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    const __m512 v = load16_avx512(x + i0 + k);
    const __m512i b = _mm512_castps_si512(v), a = _mm512_and_si512(b, magnitude_mask);
    const __m512i w = _mm512_loadu_si512(words + k);
    const __m512i e = _mm512_srli_epi32(a, 23);
    const __mmask16 up = _mm512_cmplt_epu32_mask(w, _mm512_slli_epi32(_mm512_and_si512(a, mantissa_mask), 9));
    const __m512i base = _mm512_sub_epi32(e, _mm512_set1_epi32(127 - kNaturalBias));
    __m512i code = _mm512_mask_add_epi32(base, up, base, one);
    code = _mm512_mask_mov_epi32(code, _mm512_cmpge_epu32_mask(a, max_bits), _mm512_set1_epi32(127));
    const __mmask16 tiny = _mm512_cmplt_epu32_mask(a, min_bits);
    code = _mm512_mask_mov_epi32(code, tiny, _mm512_setzero_si512());  // zeros (and tiny values rounded down)
    if (_mm512_mask_test_epi32_mask(tiny, a, a)) {  // rare: nonzero values below 2^kNaturalMinExp
      const __m512 p = _mm512_mul_ps(_mm512_castsi512_ps(a), scale_tiny);  // exact
      const __m512d plo = _mm512_mul_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(p)), two32);
      const __m512d phi = _mm512_mul_pd(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(p), 1))), two32);
      const __mmask16 tiny_up = __mmask16(_mm512_cmp_pd_mask(_mm512_cvtepu32_pd(_mm512_castsi512_si256(w)), plo, _CMP_LT_OQ) |
                                          (_mm512_cmp_pd_mask(_mm512_cvtepu32_pd(_mm512_extracti64x4_epi64(w, 1)), phi, _CMP_LT_OQ) << 8));
      code = _mm512_mask_mov_epi32(code, tiny & tiny_up, one);
    }
    const __mmask16 negative = _mm512_cmplt_epi32_mask(b, _mm512_setzero_si512()) & _mm512_test_epi32_mask(code, code);
    code = _mm512_mask_or_epi32(code, negative, code, _mm512_set1_epi32(0x80));
    code = _mm512_maskz_mov_epi32(_mm512_cmple_epu32_mask(a, nan_above), code);  // NaN: 0
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i0 + k), _mm512_cvtepi32_epi8(code));
  }
  for (; k < n; ++k) codes[i0 + k] = natural_code(float(to_acc(x[i0 + k])), words[k]);
}
#endif

#ifdef CK_AVX512
// stochastic_round_bf16 of n float32 values, 16 at a time: the top 16 bits, plus one where the next 16
// random bits fall below the 16 dropped ones (never for infinities: nothing is dropped; NaN is quietened).
CK_AVX512 void stochastic_round_bf16_avx512(const float* x, int64_t n, const uint32_t* words, bfloat16* out) {
  const __m512i low_mask = _mm512_set1_epi32(0xffff), one = _mm512_set1_epi32(1);
  const __m512i magnitude_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    const __m512i b = _mm512_castps_si512(_mm512_loadu_ps(x + k));
    const __m512i w = _mm512_loadu_si512(words + k);
    const __m512i hi = _mm512_srli_epi32(b, 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, magnitude_mask), inf);
    const __mmask16 up = _mm512_cmplt_epu32_mask(_mm512_srli_epi32(w, 16), _mm512_and_si512(b, low_mask)) & __mmask16(~nan);
    __m512i r = _mm512_mask_add_epi32(hi, up, hi, one);
    r = _mm512_mask_or_epi32(r, nan, hi, _mm512_set1_epi32(0x40));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k), _mm512_cvtepi32_epi16(r));
  }
  for (; k < n; ++k) out[k] = stochastic_round_bf16(x[k], words[k]);
}
#endif

#ifdef CK_AVX512
// The 16 float64 lanes of (lo, hi) summed in lane order (the order of the portable loop).
CK_AVX512 inline double sum_lanes_avx512(__m512d lo, __m512d hi) {
  double lane[kLanes];
  _mm512_storeu_pd(lane, lo);
  _mm512_storeu_pd(lane + 8, hi);
  double sum = 0.0;
  for (int l = 0; l < kLanes; ++l) sum += lane[l];
  return sum;
}

// The L2 norm sum of block_norm_sum over [begin, end) of float32/bfloat16 x: the same 16 lanes (two vectors
// of 8 doubles), the tail (fewer than 16 elements) through a masked load into lanes 0.. in order (the
// masked-off lanes add +0.0, which changes no lane: every lane is >= +0). Bitwise block_norm_sum's l2.
CK_AVX512 inline void add_squares_avx512(__m512 v, __m512d& lo, __m512d& hi) {
  const __m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
  const __m512d b = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  lo = _mm512_add_pd(lo, _mm512_mul_round_pd(a, a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  hi = _mm512_add_pd(hi, _mm512_mul_round_pd(b, b, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

template <class T>
CK_AVX512 double l2_sum_avx512(const T* x, int64_t begin, int64_t end) {
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) add_squares_avx512(load16_avx512(x + i), lo, hi);
  if (i < end) {
    const __mmask16 m = __mmask16((1u << (end - i)) - 1u);
    if constexpr (std::is_same_v<T, float>) {
      add_squares_avx512(_mm512_maskz_loadu_ps(m, x + i), lo, hi);
    } else {
      const __m256i h = _mm256_maskz_loadu_epi16(m, x + i);
      add_squares_avx512(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)), lo, hi);
    }
  }
  return sum_lanes_avx512(lo, hi);
}

// QSGD codes of n elements of x (from element i0) given each element's norm and word, 16 at a time, with
// the operations of qsgd_code (float32 multiply, divide, floor, exact comparison in double), stored as C
// (uint8_t for w <= 8 bits, uint16_t for w <= 16, uint32_t otherwise).
template <class T, class C>
CK_AVX512 void qsgd_codes_avx512(const T* x, int64_t i0, int64_t n, const float* norm, const uint32_t* words,
                                      int64_t levels, C* codes) {
  const __m512 sign_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff)), l = _mm512_set1_ps(float(levels));
  const __m512d two32 = _mm512_set1_pd(4294967296.0);
  const __m512i one = _mm512_set1_epi32(1), top = _mm512_set1_epi32(int(levels));
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    const __m512 v = load16_avx512(x + i0 + k), nv = _mm512_loadu_ps(norm + k);
    const __m512 r = _mm512_div_ps(_mm512_mul_ps(_mm512_and_ps(v, sign_mask), l), nv);
    const __mmask16 valid = _mm512_cmp_ps_mask(nv, _mm512_setzero_ps(), _CMP_GT_OQ);
    const __mmask16 big = _mm512_cmp_ps_mask(r, l, _CMP_NLT_UQ);  // r >= levels or NaN
    const __m512 low = _mm512_roundscale_ps(r, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(r, low);
    const __m512i w = _mm512_loadu_si512(words + k);
    const __m512d flo = _mm512_mul_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(f)), two32);
    const __m512d fhi = _mm512_mul_pd(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1))), two32);
    const __mmask16 up = __mmask16(_mm512_cmp_pd_mask(_mm512_cvtepu32_pd(_mm512_castsi512_si256(w)), flo, _CMP_LT_OQ) |
                                   (_mm512_cmp_pd_mask(_mm512_cvtepu32_pd(_mm512_extracti64x4_epi64(w, 1)), fhi, _CMP_LT_OQ) << 8));
    const __m512i base = _mm512_maskz_cvttps_epu32(__mmask16(~big), low);
    __m512i xi = _mm512_mask_add_epi32(base, up & __mmask16(~big), base, one);
    xi = _mm512_mask_mov_epi32(xi, big, top);
    const __mmask16 negative = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
    const __m512i code = _mm512_mask_or_epi32(_mm512_slli_epi32(xi, 1), negative, _mm512_slli_epi32(xi, 1), one);
    const __mmask16 keep = valid & _mm512_test_epi32_mask(xi, xi);
    const __m512i kept = _mm512_maskz_mov_epi32(keep, code);
    if constexpr (sizeof(C) == 1)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + k), _mm512_cvtepi32_epi8(kept));
    else if constexpr (sizeof(C) == 2)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + k), _mm512_cvtepi32_epi16(kept));
    else
      _mm512_storeu_si512(codes + k, kept);
  }
  for (; k < n; ++k) codes[k] = C(qsgd_code(float(to_acc(x[i0 + k])), norm[k], levels, words[k]));
}

// Packs n byte codes of w <= 8 bits (n a multiple of 8, or the message's last codes, zero-padded to 8
// here) LSB first: eight codes are w bytes, one pext of their eight bytes.
CK_AVX512 inline int64_t pack_code_bytes_bmi2(const uint8_t* codes, int64_t n, int w, uint8_t* out) {
  const uint64_t mask = 0x0101010101010101ull * ((1u << w) - 1u);
  int64_t o = 0, k = 0;
  for (; k + 8 <= n; k += 8, o += w) {
    uint64_t v;
    std::memcpy(&v, codes + k, 8);
    const uint64_t packed = _pext_u64(v, mask);
    std::memcpy(out + o, &packed, 8);  // out has 8 bytes of slack past the packed codes
  }
  if (k < n) {
    uint64_t v = 0;
    std::memcpy(&v, codes + k, size_t(n - k));
    const uint64_t packed = _pext_u64(v, mask);
    std::memcpy(out + o, &packed, 8);
    o += ((n - k) * w + 7) / 8;
  }
  return o;
}

// The same for codes of 9 <= w <= 16 bits in uint16_t: four codes per pext (4 w <= 64 bits), eight codes
// are w <= 16 bytes (out has 16 bytes of slack past the packed codes).
CK_AVX512 inline int64_t pack_code_words_bmi2(const uint16_t* codes, int64_t n, int w, uint8_t* out) {
  const uint64_t mask = 0x0001000100010001ull * ((1u << w) - 1u);
  int64_t o = 0, k = 0;
  uint16_t last[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (; k < n; k += 8, o += w) {
    const uint16_t* group = codes + k;
    if (n - k < 8) {  // the message's last codes, zero-padded to eight
      std::memcpy(last, codes + k, size_t(n - k) * 2);
      group = last;
    }
    uint64_t lo, hi;
    std::memcpy(&lo, group, 8);
    std::memcpy(&hi, group + 4, 8);
    const unsigned __int128 packed = (unsigned __int128)_pext_u64(lo, mask) | (unsigned __int128)_pext_u64(hi, mask) << (4 * w);
    std::memcpy(out + o, &packed, 16);
    if (n - k < 8) return o + ((n - k) * w + 7) / 8;
  }
  return o;
}

// QSGD of the elements [begin, end) (begin a multiple of 8 and a bucket start; end the message's end or
// a multiple of 8 and a bucket start), w <= 16: the buckets' norms, then their codes while they are in
// cache, in tiles of 4 kDrawTile elements packed in a local buffer and copied out whole.
template <class T>
CK_AVX512 void qsgd_range_avx512(const T* x, int64_t begin, int64_t end, int64_t levels, int64_t bucket_size,
                                 uint64_t seed, uint64_t step, float* norms, uint8_t* codes) {
  const int w = qsgd_code_bits(levels);
  for (int64_t b = begin / bucket_size; b * bucket_size < end; ++b)
    norms[b] = round_up_to_float(sqrt_acc(l2_sum_avx512(x, b * bucket_size, std::min(end, (b + 1) * bucket_size))));
  constexpr int64_t kTile = 4 * kDrawTile;
  alignas(64) uint32_t words[kTile];
  alignas(64) float norm_of[kTile];
  alignas(64) uint8_t code_of[kTile];
  alignas(64) uint16_t code16_of[kTile];
  alignas(64) uint8_t packed[2 * kTile + 16];
  for (int64_t t = begin; t < end; t += kTile) {
    const int64_t n = std::min(kTile, end - t);
    fill_draws_avx512(seed, step, kTagQsgd, uint64_t(t / 4), (n + 3) / 4, words);
    for (int64_t i = t; i < t + n;) {  // each element's bucket norm, a bucket segment at a time
      const int64_t b = i / bucket_size, stop = std::min(t + n, (b + 1) * bucket_size);
      std::fill(norm_of + (i - t), norm_of + (stop - t), norms[b]);
      i = stop;
    }
    int64_t bytes;
    if (w <= 8) {
      qsgd_codes_avx512(x, t, n, norm_of, words, levels, code_of);
      bytes = pack_code_bytes_bmi2(code_of, n, w, packed);
    } else {
      qsgd_codes_avx512(x, t, n, norm_of, words, levels, code16_of);
      bytes = pack_code_words_bmi2(code16_of, n, w, packed);
    }
    std::memcpy(codes + t / 8 * w, packed, size_t(bytes));
  }
}
#endif

void fill_draws(uint64_t seed, uint64_t step, uint32_t tag, uint64_t q0, int64_t n, uint32_t* words) {
#ifdef CK_AVX512
  if (has_avx512()) return fill_draws_avx512(seed, step, tag, q0, n, words);
#endif
  for (int64_t k = 0; k < n; ++k) {
    const Philox4x32 block = quant_draws(seed, step, tag, q0 + uint64_t(k));
    memcpy(words + 4 * k, block.v, 16);
  }
}

#ifdef CK_AVX512
// block_norm_sum of p = residual + grad (float32 residual, float32 or bfloat16 grad): p in float32 as
// LoadSum computes it, then block_norm_sum's 16 double lanes; the tail through masked loads (the lanes
// past the end get p = +0, which adds nothing).
CK_AVX512 inline void add_norm_terms_avx512(__m512 p, NormKind kind, __m512d& lo, __m512d& hi) {
  if (kind == NormKind::l1) p = _mm512_and_ps(p, _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff)));
  __m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(p));
  __m512d b = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(p), 1)));
  if (kind == NormKind::l2) {
    a = _mm512_mul_round_pd(a, a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    b = _mm512_mul_round_pd(b, b, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  lo = _mm512_add_pd(lo, a);
  hi = _mm512_add_pd(hi, b);
}

template <class G>
CK_AVX512 __m512 load16_masked_avx512(const G* x, __mmask16 m) {
  if constexpr (std::is_same_v<G, float>) {
    return _mm512_maskz_loadu_ps(m, x);
  } else {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, x)), 16));
  }
}

template <class G>
CK_AVX512 double block_norm_sum_ef_avx512(const G* g, const float* r, int64_t begin, int64_t end, NormKind kind) {
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) add_norm_terms_avx512(_mm512_add_ps(_mm512_loadu_ps(r + i), load16_avx512(g + i)), kind, lo, hi);
  if (i < end) {
    const __mmask16 m = __mmask16((1u << (end - i)) - 1u);
    add_norm_terms_avx512(_mm512_add_ps(_mm512_maskz_loadu_ps(m, r + i), load16_masked_avx512(g + i, m)), kind, lo, hi);
  }
  return sum_lanes_avx512(lo, hi);
}

// sign_pack_ef's loop on the elements [i0, i1) (a multiple of 16 of them, i0 a multiple of 8): p = r + g,
// its sign bits, r <- p - (p < 0 ? -scale : scale), 16 at a time.
template <class G>
CK_AVX512 void sign_pack_ef_avx512(const G* g, float* r, int64_t i0, int64_t i1, float scale, uint8_t* bits) {
  const __m512 plus = _mm512_set1_ps(scale), minus = _mm512_set1_ps(-scale);
  for (int64_t i = i0; i < i1; i += 16) {
    const __m512 p = _mm512_add_ps(_mm512_loadu_ps(r + i), load16_avx512(g + i));
    const __mmask16 negative = _mm512_cmp_ps_mask(p, _mm512_setzero_ps(), _CMP_LT_OQ);
    _mm512_storeu_ps(r + i, _mm512_sub_ps(p, _mm512_mask_blend_ps(negative, plus, minus)));
    const uint16_t m = negative;
    memcpy(bits + i / 8, &m, 2);
  }
}
#endif

template <class G>
double block_norm_sum_dispatch(const LoadSum<G, float>& load, int64_t begin, int64_t end, NormKind kind) {
#ifdef CK_AVX512
  if constexpr (kHasSignAvx512<G>) {
    if (has_avx512()) return block_norm_sum_ef_avx512(load.grad, load.residual, begin, end, kind);
  }
#endif
  return block_norm_sum(load, begin, end, kind);
}

template <class T>
double block_norm_sum_dispatch(const LoadX<T>& load, int64_t begin, int64_t end, NormKind kind) {
#ifdef CK_AVX512
  if constexpr (kHasSignAvx512<T>) {
    if (has_avx512()) return block_norm_sum_avx512(load.x, begin, end, kind);
  }
#endif
  return block_norm_sum(load, begin, end, kind);
}
template <class Load>
double block_norm_sum_dispatch(const Load& load, int64_t begin, int64_t end, NormKind kind) {
  return block_norm_sum(load, begin, end, kind);
}

// Sum over all elements of |p| or p^2: block sums (quantize.h) added in double in block order.
template <class Load>
double norm_total(const Load& load, int64_t size, NormKind kind) {
  const int64_t blocks = (size + kNormBlock - 1) / kNormBlock;
  std::vector<double> partial(size_t(std::max<int64_t>(blocks, 1)), 0.0);
  parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      partial[size_t(b)] = block_norm_sum_dispatch(load, b * kNormBlock, std::min(size, (b + 1) * kNormBlock), kind);
  });
  double total = 0.0;
  for (int64_t b = 0; b < blocks; ++b) total += partial[size_t(b)];
  return total;
}

template <class Load>
float sign_scale(const Load& load, int64_t size, int kind) {
  if (kind == 0) return 1.0f;
  const NormKind k = NormKind(kind);
  return sign_scale_from_total(norm_total(load, size, k), size, k);
}

// max |p| (NaN propagates) as float32, float64 rounded up.
template <class Load>
float max_magnitude(const Load& load, int64_t size) {
  using A = decltype(load(0));
  using K = decltype(magnitude_key(A(0)));
  const int chunks = chunk_count(size);
  std::vector<K> partial(size_t(chunks), K(0));
  parallel_chunks(size, chunks, [&](int c, int64_t begin, int64_t end) {
#ifdef CK_AVX512
    if constexpr (kIsLoadX<Load>) {
      using T = std::remove_cv_t<std::remove_pointer_t<decltype(load.x)>>;
      if constexpr (kHasSignAvx512<T>) {
        if (has_avx512()) {
          partial[size_t(c)] = max_key_avx512(load.x, begin, end);
          return;
        }
      }
    }
#endif
    K m = 0;
    for (int64_t i = begin; i < end; ++i) m = std::max(m, magnitude_key(load(i)));
    partial[size_t(c)] = m;
  });
  return round_up_to_float(key_value(*std::max_element(partial.begin(), partial.end())));
}

// ---- sign -----------------------------------------------------------------------------------------------

// The bits [b0, b1) of x's signs (full bytes only: 8 b1 <= size).
template <class T>
void sign_bytes_full(const LoadX<T>& load, int64_t b0, int64_t b1, uint8_t* bits) {
#ifdef CK_AVX512
  if constexpr (kHasSignAvx512<T>) {
    if (has_avx512()) return sign_pack_avx512(load.x, b0, b1, bits);
  }
#endif
  for (int64_t b = b0; b < b1; ++b) {
    uint32_t byte = 0;
    for (int j = 0; j < 8; ++j) byte |= uint32_t(load(b * 8 + j) < 0) << j;
    bits[b] = uint8_t(byte);
  }
}

// sign_compress in one pass over x: each block of kNormBlock elements gives its partial sum (the
// fixed-order sums of norm_total) and then its bits while it is still in cache (the bits do not depend
// on the scale). Returns the scale.
template <class T>
float sign_compress_one_pass(const LoadX<T>& load, int64_t size, int kind, uint8_t* bits) {
  const int64_t blocks = (size + kNormBlock - 1) / kNormBlock;
  std::vector<double> partial(size_t(std::max<int64_t>(blocks, 1)), 0.0);
  parallel_for(blocks, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t begin = k * kNormBlock, end = std::min(size, begin + kNormBlock);
      if (kind != 0) partial[size_t(k)] = block_norm_sum_dispatch(load, begin, end, NormKind(kind));
      sign_bytes_full(load, begin / 8, end / 8, bits);  // kNormBlock is a multiple of 8
      if (end == size && size % 8) bits[size / 8] = sign_byte(load, size / 8, size);
    }
  });
  if (kind == 0) return 1.0f;
  double total = 0.0;
  for (int64_t k = 0; k < blocks; ++k) total += partial[size_t(k)];
  return sign_scale_from_total(total, size, NormKind(kind));
}

// One pass: p = residual + grad, its sign bit, residual <- p -+ scale. Locals (not the captured
// references) in the loop, so that the byte stores cannot alias them and force reloads.
template <class G, class R>
void sign_pack_ef(const G* grad, R* residual, int64_t size, float scale, uint8_t* bits) {
  using A = acc_t<R>;
  parallel_for((size + 7) / 8, kByteGrain, [grad, residual, size, scale, bits](int64_t b0, int64_t b1) {
    const G* __restrict g = grad;
    R* __restrict r = residual;
    uint8_t* __restrict out = bits;
    const A s = A(scale);
#ifdef CK_AVX512
    if constexpr (std::is_same_v<R, float> && kHasSignAvx512<G>) {
      if (has_avx512()) {
        const int64_t i0 = b0 * 8, i1 = i0 + (std::min(size, b1 * 8) - i0) / 16 * 16;
        sign_pack_ef_avx512(g, r, i0, i1, scale, out);
        b0 = i1 / 8;
      }
    }
#endif
    for (int64_t b = b0; b < b1; ++b) {
      const int n = int(std::min<int64_t>(8, size - b * 8));
      uint32_t byte = 0;
      for (int j = 0; j < n; ++j) {
        const int64_t i = b * 8 + j;
        const A p = A(to_acc(r[i])) + A(to_acc(g[i]));
        const bool negative = p < A(0);
        byte |= uint32_t(negative) << j;
        r[i] = from_acc<R>(p - (negative ? -s : s));
      }
      out[b] = uint8_t(byte);
    }
  });
}

// ---- TernGrad -------------------------------------------------------------------------------------------

// Byte b of TernGrad's codes uses Philox block b: tiles of kDrawTile bytes draw their words at once.
// For error feedback (residual != nullptr) also residual <- p - value.
template <class Load, class R>
void terngrad_pack(const Load& load, int64_t size, float scale, uint64_t seed, uint64_t step, uint8_t* codes,
                   R* residual) {
  using A = decltype(load(0));
  parallel_for((size + 3) / 4, kByteGrain, [&](int64_t b0, int64_t b1) {
    // locals, not captured references, so that the byte stores cannot alias them and force reloads
    const Load ld = load;
    uint8_t* __restrict out = codes;
    R* __restrict res = residual;
    const float sc = scale;
    uint32_t words[4 * kDrawTile];
    for (int64_t t = b0; t < b1; t += kDrawTile) {
      const int64_t n = std::min(kDrawTile, b1 - t);
      fill_draws(seed, step, kTagTerngrad, uint64_t(t), n, words);
#ifdef CK_AVX512
      if constexpr (kIsLoadX<Load>) {
        using T = std::remove_cv_t<std::remove_pointer_t<decltype(load.x)>>;
        if constexpr (kHasSignAvx512<T>) {
          if (has_avx512() && (t + n) * 4 <= size) {
            terngrad_tile_avx512(load.x, t, n, scale, words, codes);
            continue;
          }
        }
      }
#endif
      for (int64_t b = t; b < t + n; ++b) {
        const uint8_t byte = terngrad_byte_from(ld, b, size, sc, words + 4 * (b - t));
        if (res)
          for (int64_t i = b * 4, end = std::min(size, b * 4 + 4); i < end; ++i)
            res[i] = from_acc<R>(ld(i) - A(terngrad_value(byte, int(i - b * 4), sc)));
        out[b] = byte;
      }
    }
  });
}

// ---- QSGD -----------------------------------------------------------------------------------------------

// Codes of the groups of eight [g0, g1) (group g: elements 8g .. 8g+7, bytes g w .. (g+1) w); for error
// feedback (residual != nullptr) also residual <- p - value.
template <class Load, class R>
void qsgd_encode_groups(const Load& load_ref, int64_t size, int64_t levels, int64_t bucket_size,
                        const float* norms, uint64_t seed, uint64_t step, int64_t g0, int64_t g1, uint8_t* codes,
                        R* __restrict residual) {
  using A = decltype(load_ref(0));
  const Load load = load_ref;  // a local: the code stores cannot alias it
  const int w = qsgd_code_bits(levels);
  BitWriter writer{codes + g0 * w};
  const int64_t begin = g0 * 8, end = std::min(size, g1 * 8);
  int64_t bucket = begin / bucket_size, bucket_end = (bucket + 1) * bucket_size;  // no division per element
  float norm = norms[bucket];
  uint32_t words[4 * kDrawTile];
  for (int64_t t = begin; t < end; t += 4 * kDrawTile) {
    const int64_t tile_end = std::min(end, t + 4 * kDrawTile);
    fill_draws(seed, step, kTagQsgd, uint64_t(t / 4), (tile_end - t + 3) / 4, words);
#ifdef CK_AVX512
    if constexpr (kIsLoadX<Load>) {
      using T = std::remove_cv_t<std::remove_pointer_t<decltype(load.x)>>;
      if constexpr (kHasSignAvx512<T>) {
        if (has_avx512()) {
          float norm_of[4 * kDrawTile];
          uint32_t code_of[4 * kDrawTile];
          for (int64_t i = t; i < tile_end; ++i) {
            if (i == bucket_end) {
              norm = norms[++bucket];
              bucket_end += bucket_size;
            }
            norm_of[i - t] = norm;
          }
          qsgd_codes_avx512(load.x, t, tile_end - t, norm_of, words, levels, code_of);
          for (int64_t i = t; i < tile_end; ++i) writer.put(code_of[i - t], w);
          continue;
        }
      }
    }
#endif
    for (int64_t i = t; i < tile_end; ++i) {
      if (i == bucket_end) {
        norm = norms[++bucket];
        bucket_end += bucket_size;
      }
      const A v = load(i);
      const uint32_t code = qsgd_code(v, norm, levels, words[i - t]);
      writer.put(code, w);
      if (residual) residual[i] = from_acc<R>(v - A(qsgd_value(code, norm, levels)));
    }
  }
  writer.flush();
}

template <class Load, class R>
void qsgd_run(const Load& load, int64_t size, int64_t levels, int64_t bucket_size, uint64_t seed, uint64_t step,
              uint8_t* codes, float* norms, R* residual) {
  const int64_t buckets = bucket_count(size, bucket_size);
  const int64_t groups = (size + 7) / 8;
  const int64_t unit = std::lcm(int64_t(8), bucket_size);  // whole buckets and whole groups
  if (unit <= (1 << 16)) {
    // One pass: each unit's norms, then its codes while the unit is still in cache.
    const int64_t units = (size + unit - 1) / unit;
    parallel_for(units, std::max<int64_t>(1, (1 << 16) / unit), [&](int64_t u0, int64_t u1) {
#ifdef CK_AVX512
      if constexpr (kIsLoadX<Load> && std::is_same_v<R, float>) {
        using T = std::remove_cv_t<std::remove_pointer_t<decltype(load.x)>>;
        if constexpr (kHasSignAvx512<T>) {
          if (has_avx512() && !residual && qsgd_code_bits(levels) <= 16) {
            // whole units at a time: a bucket never straddles two calls
            const int64_t step_units = std::max<int64_t>(1, (1 << 13) / unit);
            for (int64_t u = u0; u < u1; u += step_units)
              qsgd_range_avx512(load.x, u * unit, std::min(size, std::min(u1, u + step_units) * unit), levels,
                                bucket_size, seed, step, norms, codes);
            return;
          }
        }
      }
#endif
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t begin = u * unit, end = std::min(size, begin + unit);
        for (int64_t b = begin / bucket_size; b * bucket_size < end; ++b)
          norms[b] = qsgd_bucket_norm(load, b * bucket_size, std::min(size, (b + 1) * bucket_size));
        qsgd_encode_groups(load, size, levels, bucket_size, norms, seed, step, begin / 8, (end + 7) / 8, codes,
                           residual);
      }
    });
    return;
  }
  parallel_for(buckets, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      norms[b] = qsgd_bucket_norm(load, b * bucket_size, std::min(size, (b + 1) * bucket_size));
  });
  parallel_for(groups, kByteGrain, [&](int64_t g0, int64_t g1) {
    qsgd_encode_groups(load, size, levels, bucket_size, norms, seed, step, g0, g1, codes, residual);
  });
}

// ---- natural compression, stochastic rounding ---------------------------------------------------------

template <class Load, class R>
void natural_run(const Load& load, int64_t size, uint64_t seed, uint64_t step, uint8_t* codes, R* residual) {
  using A = decltype(load(0));
  parallel_for((size + 3) / 4, kByteGrain, [&](int64_t q0, int64_t q1) {
    const Load ld = load;  // locals: the code stores cannot alias them
    uint8_t* __restrict out = codes;
    R* __restrict res = residual;
    uint32_t words[4 * kDrawTile];
    for (int64_t t = q0; t < q1; t += kDrawTile) {
      const int64_t n = std::min(kDrawTile, q1 - t);
      fill_draws(seed, step, kTagNatural, uint64_t(t), n, words);
#ifdef CK_AVX512
      if constexpr (kIsLoadX<Load>) {
        using T = std::remove_cv_t<std::remove_pointer_t<decltype(ld.x)>>;
        if constexpr (kHasSignAvx512<T>) {
          if (has_avx512() && !res) {
            natural_codes_avx512(ld.x, t * 4, std::min(size, (t + n) * 4) - t * 4, words, out);
            continue;
          }
        }
      }
#endif
      for (int64_t i = t * 4, end = std::min(size, (t + n) * 4); i < end; ++i) {
        const A v = ld(i);
        const uint8_t code = natural_code(v, words[i - t * 4]);
        out[i] = code;
        if (res) res[i] = from_acc<R>(v - A(natural_value(code)));
      }
    }
  });
}

}  // namespace

// ---- entry points -------------------------------------------------------------------------------------

void sign_compress(const Array& x, int scale_kind, const Array& bits, const Array& scale, Stream) {
  check_scale_kind(scale_kind);
  check_size_fits_int32(x.size, "x");
  uint8_t* out = check_bytes(bits, (x.size + 7) / 8, "bits");
  advise_huge_pages(out, (x.size + 7) / 8);
  float* s = check_floats(scale, 1, "scale");
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const LoadX<T> load{static_cast<const T*>(x.data)};
    *s = sign_compress_one_pass(load, x.size, scale_kind, out);
  });
}

void sign_compress_ef(const Array& grad, const Array& residual, int scale_kind, const Array& bits,
                      const Array& scale, Stream) {
  check_scale_kind(scale_kind);
  check_size_fits_int32(grad.size, "grad");
  uint8_t* out = check_bytes(bits, (grad.size + 7) / 8, "bits");
  advise_huge_pages(out, (grad.size + 7) / 8);
  float* s = check_floats(scale, 1, "scale");
  dispatch_grad_residual(grad, residual, [&](auto gtag, auto rtag) {
    using G = typename decltype(gtag)::type;
    using R = typename decltype(rtag)::type;
    const G* g = static_cast<const G*>(grad.data);
    R* r = static_cast<R*>(residual.data);
    *s = sign_scale(LoadSum<G, R>{g, r}, grad.size, scale_kind);
    sign_pack_ef(g, r, grad.size, *s, out);
  });
}

void sign_decompress(const Array& bits, const Array& scale, const Array& out, Stream) {
  check_size_fits_int32(out.size, "out");
  const uint8_t* in = check_bytes(bits, (out.size + 7) / 8, "bits");
  const float s = *check_floats(scale, 1, "scale");
  dispatch_float(out.dtype, "out", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* o = static_cast<T*>(out.data);
    advise_huge_pages(o, out.size * int64_t(sizeof(T)));
    parallel_for(out.size, int64_t(kByteGrain) * 8, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) o[i] = from_acc<T>(acc_t<T>(sign_value(in[i / 8], int(i % 8), s)));
    });
  });
}

void terngrad(const Array& x, uint64_t seed, uint64_t step, const Array& codes, const Array& scale, Stream) {
  check_size_fits_int32(x.size, "x");
  uint8_t* out = check_bytes(codes, (x.size + 3) / 4, "codes");
  advise_huge_pages(out, (x.size + 3) / 4);
  float* s = check_floats(scale, 1, "scale");
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const LoadX<T> load{static_cast<const T*>(x.data)};
    *s = max_magnitude(load, x.size);
    terngrad_pack(load, x.size, *s, seed, step, out, static_cast<float*>(nullptr));
  });
}

void terngrad_ef(const Array& grad, const Array& residual, uint64_t seed, uint64_t step, const Array& codes,
                 const Array& scale, Stream) {
  check_size_fits_int32(grad.size, "grad");
  uint8_t* out = check_bytes(codes, (grad.size + 3) / 4, "codes");
  advise_huge_pages(out, (grad.size + 3) / 4);
  float* s = check_floats(scale, 1, "scale");
  dispatch_grad_residual(grad, residual, [&](auto gtag, auto rtag) {
    using G = typename decltype(gtag)::type;
    using R = typename decltype(rtag)::type;
    R* r = static_cast<R*>(residual.data);
    const LoadSum<G, R> load{static_cast<const G*>(grad.data), r};
    *s = max_magnitude(load, grad.size);
    terngrad_pack(load, grad.size, *s, seed, step, out, r);
  });
}

void terngrad_decompress(const Array& codes, const Array& scale, const Array& out, Stream) {
  check_size_fits_int32(out.size, "out");
  const uint8_t* in = check_bytes(codes, (out.size + 3) / 4, "codes");
  const float s = *check_floats(scale, 1, "scale");
  dispatch_float(out.dtype, "out", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* o = static_cast<T*>(out.data);
    advise_huge_pages(o, out.size * int64_t(sizeof(T)));
    parallel_for(out.size, int64_t(kByteGrain) * 4, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) o[i] = from_acc<T>(acc_t<T>(terngrad_value(in[i / 4], int(i % 4), s)));
    });
  });
}

void qsgd(const Array& x, int64_t levels, int64_t bucket_size, uint64_t seed, uint64_t step, const Array& codes,
          const Array& norms, Stream) {
  check_qsgd_params(levels, bucket_size);
  check_size_fits_int32(x.size, "x");
  uint8_t* out = check_bytes(codes, packed_bytes(x.size, qsgd_code_bits(levels)), "codes");
  advise_huge_pages(out, packed_bytes(x.size, qsgd_code_bits(levels)));
  float* n = check_floats(norms, bucket_count(x.size, bucket_size), "norms");
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    qsgd_run(LoadX<T>{static_cast<const T*>(x.data)}, x.size, levels, bucket_size, seed, step, out, n,
             static_cast<float*>(nullptr));
  });
}

void qsgd_ef(const Array& grad, const Array& residual, int64_t levels, int64_t bucket_size, uint64_t seed,
             uint64_t step, const Array& codes, const Array& norms, Stream) {
  check_qsgd_params(levels, bucket_size);
  check_size_fits_int32(grad.size, "grad");
  uint8_t* out = check_bytes(codes, packed_bytes(grad.size, qsgd_code_bits(levels)), "codes");
  advise_huge_pages(out, packed_bytes(grad.size, qsgd_code_bits(levels)));
  float* n = check_floats(norms, bucket_count(grad.size, bucket_size), "norms");
  dispatch_grad_residual(grad, residual, [&](auto gtag, auto rtag) {
    using G = typename decltype(gtag)::type;
    using R = typename decltype(rtag)::type;
    R* r = static_cast<R*>(residual.data);
    qsgd_run(LoadSum<G, R>{static_cast<const G*>(grad.data), r}, grad.size, levels, bucket_size, seed, step, out,
             n, r);
  });
}

void qsgd_decompress(const Array& codes, const Array& norms, int64_t levels, int64_t bucket_size, const Array& out,
                     Stream) {
  check_qsgd_params(levels, bucket_size);
  check_size_fits_int32(out.size, "out");
  const int w = qsgd_code_bits(levels);
  const uint8_t* in = check_bytes(codes, packed_bytes(out.size, w), "codes");
  const float* n = check_floats(norms, bucket_count(out.size, bucket_size), "norms");
  const int64_t size = out.size;
  dispatch_float(out.dtype, "out", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* o = static_cast<T*>(out.data);
    advise_huge_pages(o, out.size * int64_t(sizeof(T)));
    parallel_for((size + 7) / 8, kByteGrain, [&](int64_t g0, int64_t g1) {
      BitReader reader{in + g0 * w, in + codes.size};
      for (int64_t i = g0 * 8, end = std::min(size, g1 * 8); i < end; ++i)
        o[i] = from_acc<T>(acc_t<T>(qsgd_value(reader.get(w), n[i / bucket_size], levels)));
    });
  });
}

void natural_compress(const Array& x, uint64_t seed, uint64_t step, const Array& codes, Stream) {
  check_size_fits_int32(x.size, "x");
  uint8_t* out = check_bytes(codes, x.size, "codes");
  advise_huge_pages(out, x.size);
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    natural_run(LoadX<T>{static_cast<const T*>(x.data)}, x.size, seed, step, out, static_cast<float*>(nullptr));
  });
}

void natural_compress_ef(const Array& grad, const Array& residual, uint64_t seed, uint64_t step,
                         const Array& codes, Stream) {
  check_size_fits_int32(grad.size, "grad");
  uint8_t* out = check_bytes(codes, grad.size, "codes");
  advise_huge_pages(out, grad.size);
  dispatch_grad_residual(grad, residual, [&](auto gtag, auto rtag) {
    using G = typename decltype(gtag)::type;
    using R = typename decltype(rtag)::type;
    R* r = static_cast<R*>(residual.data);
    natural_run(LoadSum<G, R>{static_cast<const G*>(grad.data), r}, grad.size, seed, step, out, r);
  });
}

void natural_decompress(const Array& codes, const Array& out, Stream) {
  check_size_fits_int32(out.size, "out");
  const uint8_t* in = check_bytes(codes, out.size, "codes");
  dispatch_float(out.dtype, "out", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* o = static_cast<T*>(out.data);
    advise_huge_pages(o, out.size * int64_t(sizeof(T)));
    parallel_for(out.size, int64_t(kByteGrain) * 8, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) o[i] = from_acc<T>(acc_t<T>(natural_value(in[i])));
    });
  });
}

void stochastic_round(const Array& x, uint64_t seed, uint64_t step, const Array& out, Stream) {
  check_size_fits_int32(x.size, "x");
  const float* in = x.as<float>("x");
  check(out.size == x.size, "out: expected " + std::to_string(x.size) + " elements, got " + std::to_string(out.size));
  advise_huge_pages(out.data, 2 * out.size);  // bfloat16 or float16 (checked below)
  const int64_t size = x.size;
  auto run = [&](auto* o, auto round) {
    parallel_for((size + 3) / 4, kByteGrain, [&](int64_t q0, int64_t q1) {
      uint32_t words[4 * kDrawTile];
      for (int64_t t = q0; t < q1; t += kDrawTile) {
        const int64_t n = std::min(kDrawTile, q1 - t);
        fill_draws(seed, step, kTagStochasticRound, uint64_t(t), n, words);
        const int64_t end = std::min(size, (t + n) * 4);
#ifdef CK_AVX512
        if constexpr (std::is_same_v<std::remove_pointer_t<decltype(o)>, bfloat16>) {
          if (has_avx512()) {
            stochastic_round_bf16_avx512(in + t * 4, end - t * 4, words, o + t * 4);
            continue;
          }
        }
#endif
        for (int64_t i = t * 4; i < end; ++i) o[i] = round(in[i], words[i - t * 4]);
      }
    });
  };
  if (out.dtype == DType::bfloat16)
    run(static_cast<bfloat16*>(out.data), [](float v, uint32_t w) { return stochastic_round_bf16(v, w); });
  else if (out.dtype == DType::float16)
    run(static_cast<float16*>(out.data), [](float v, uint32_t w) { return stochastic_round_fp16(v, w); });
  else
    throw TypeError(std::string("out: expected bfloat16 or float16, got ") + dtype_name(out.dtype));
}

}  // namespace ck::CK_BACKEND
