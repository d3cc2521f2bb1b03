// combine for bfloat16 X on the CPU's AMX tile unit (included by gram_cpu.cpp, which falls back to its
// AVX-512 route where this one does not apply; the contract is gram.h's).
//
// Why: NNM's combine is an (r x m) by (m x d) matrix product, 4.1e9 multiply-adds at r = m = 64, d = 1e6,
// arithmetic-bound on AVX-512 FMAs. One TDPBF16PS does 16 x 16 x 32 multiply-adds, ~15x the AVX-512 rate.
//
// Arithmetic. A bfloat16 x is exact as a tile operand. Each weight w = float(W[o][i]) is split into three
// bfloat16 parts, w = hi + mid + lo exactly (|mid| <= 2^-9 |w|, |lo| <= 2^-17 |w|). A product of two
// bfloat16 values is exact in float32, and the tile unit adds each product into a float32 sum with one
// rounding to nearest even, in k order. The lo and mid products of every worker go first, then the hi
// products in worker order; so the sum is the float32 route's (one rounding per worker) after a head of
// terms at most 2^-8 as large: |err| <= (n (1 + 2^-8) + 1) 2^-24 sum_i |w_i x_i| before the rounding to
// bfloat16. Not the bits of the AVX-512 route or of the GPU (values within that bound).
//
// The tile unit treats subnormal inputs and results as zero. Where every non-zero |w| and |x| is at least
// 2^-40, every product is a multiple of 2^-110 and so is every partial sum (rounding keeps a multiple of
// 2^-110 a multiple of it): no subnormal can arise, and the tile arithmetic is IEEE float32's. So a W with a
// smaller (or an infinite) float32 weight takes the AVX-512 route for the whole call, and a 32-coordinate
// unit in which some row has a smaller non-zero x takes it for that unit.
//
// Non-finite x: staged as 0, so an output whose weight for that worker is 0 gets the very bits a finite
// value would give it (gram.h: a zero weight never touches a non-finite value); every output with a
// non-zero weight for that worker then has that coordinate recomputed one term at a time (non-finite).
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "../common/cpu_features.h"
#include "../common/half.h"
#include "gram.h"

#ifdef CK_AMX
namespace ck::CK_BACKEND {
namespace {

constexpr int64_t kAmxMinOutputs = 16;  // fewer outputs: the AVX-512 route is faster (bench/README, sixth session)
constexpr int64_t kAmxUnit = 32;        // coordinates staged and multiplied at a time (two 16-column tiles)
constexpr int64_t kAmxStageUnits = 16;  // units staged at a time (64 KiB for 64 workers: L2)
constexpr uint16_t kAmxTinyBits = 87 << 7;  // bfloat16 |x| bits below 2^-40 (biased exponent 87)

// W (r x m float64) as tile operands: parts[p][r_pad][m_pad] bfloat16, p = 0 (lo), 1 (mid), 2 (hi), in the
// order they are accumulated; zero padded to whole tiles (16 outputs, 32 workers). A row whose non-zero
// weights are all one value c (NNM, bucketing: 1 / count) is the 0/1 row times scale c, applied to the
// float32 sum (one more rounding: within the same bound, the sum's terms being exact). `usable` is false
// when some non-zero float32 weight is below 2^-40 or infinite (see above). used[p][ob]: whether part p of
// output tile ob has a non-zero weight (a zero part is skipped: 0/1 rows and short bfloat16 weights).
struct AmxWeights {
  int64_t m = 0, r = 0, m_pad = 0, r_pad = 0;
  std::vector<uint16_t> parts;
  std::vector<float> w;      // float32 weights [r][m], for the non-finite fix-up
  std::vector<float> scale;  // [r_pad]
  std::vector<uint8_t> used;  // [3][r_pad / 16]
  bool usable = true;

  AmxWeights(const double* W, int64_t m_, int64_t r_)
      : m(m_), r(r_), m_pad((m_ + 31) / 32 * 32), r_pad((r_ + 15) / 16 * 16), parts(size_t(3 * r_pad * m_pad), 0),
        w(size_t(r_ * m_)), scale(size_t(r_pad), 1.0f), used(size_t(3 * r_pad / 16), 0) {
    for (int64_t o = 0; o < r; ++o) {
      float common = 0.0f;
      bool uniform = true;
      for (int64_t i = 0; i < m; ++i) {
        const double weight = W[o * m + i];
        const float v = float(weight);
        w[size_t(o * m + i)] = v;
        if (weight == 0.0) continue;
        const float mag = v < 0 ? -v : v;
        if (!(mag >= 0x1p-40f) || mag > 3.4028234e38f) usable = false;  // includes a weight rounded to 0
        if (common == 0.0f) common = v;
        uniform = uniform && v == common;
      }
      if (uniform && common != 0.0f) scale[size_t(o)] = common;
      for (int64_t i = 0; i < m; ++i) {
        const float v = w[size_t(o * m + i)];
        if (v == 0.0f) continue;
        uint16_t split[3] = {0, 0, 0x3f80};  // lo, mid, hi: 1.0 in a uniform row
        if (!(uniform && common != 0.0f)) {
          // round to nearest; each remainder is exact (<= 16, then <= 8 significant bits; v is finite here
          // or the call is not usable)
          const bfloat16 hi = from_acc<bfloat16>(v), mid = from_acc<bfloat16>(v - to_acc(hi));
          const bfloat16 lo = from_acc<bfloat16>(v - to_acc(hi) - to_acc(mid));
          split[0] = lo.bits, split[1] = mid.bits, split[2] = hi.bits;
        }
        for (int p = 0; p < 3; ++p) {
          parts[size_t((p * r_pad + o) * m_pad + i)] = split[p];
          if ((split[p] & 0x7fffu) != 0) used[size_t(p * (r_pad / 16) + o / 16)] = 1;
        }
      }
    }
  }

  const uint16_t* tile(int p, int64_t ob, int64_t kb) const {
    return parts.data() + (p * r_pad + ob * 16) * m_pad + kb * 32;
  }
  bool part_used(int p, int64_t ob) const { return used[size_t(p * (r_pad / 16) + ob)] != 0; }
};

// The 64-byte tile configuration: palette 1, tiles 0-7 all 16 rows of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

// Units [0, units) of 32 coordinates from j, staged: unit u at stage + u * m_pad / 2 * 32, where
// [q][c] (q < m_pad / 2 worker pairs, c < 32) is the pair (x_2q[j + 32 u + c], x_2q+1[...]), the "VNNI" layout
// of a TDPBF16PS B operand. Each row is read from j on, in one sequential run (64 rows a unit at a time
// would be too many streams for the hardware prefetcher), and the same run of the next block is prefetched.
// Non-finite values are staged as 0. tiny[u]: a non-zero |x| below 2^-40 in unit u (it takes the AVX-512
// route); non_finite[u]: a value was not finite.
CK_AMX inline void stage_block(const RowView<bfloat16>& rows, int64_t m, int64_t m_pad, int64_t j, int64_t units,
                               uint32_t* stage, bool* tiny, bool* non_finite) {
  // interleave a (even worker) and b (odd worker) 16 bits at a time: coordinates 0-15, then 16-31
  const __m512i first = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38,
                                         6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  const __m512i second = _mm512_add_epi16(first, _mm512_set1_epi16(16));
  const __m512i magnitude = _mm512_set1_epi16(0x7fff), inf = _mm512_set1_epi16(0x7f80);
  const __m512i tiny_bits = _mm512_set1_epi16(kAmxTinyBits - 1), one = _mm512_set1_epi16(1);
  const int64_t unit_words = m_pad / 2 * kAmxUnit;
  __mmask32 bad_any[kAmxStageUnits] = {}, tiny_any[kAmxStageUnits] = {};
  for (int64_t q = 0; q < m_pad / 2; ++q) {
    const bfloat16* x[2] = {2 * q < m ? rows.row(2 * q) + j : nullptr, 2 * q + 1 < m ? rows.row(2 * q + 1) + j : nullptr};
    for (int64_t u = 0; u < units; ++u) {
      __m512i v[2];
      for (int t = 0; t < 2; ++t) {
        if (!x[t]) {
          v[t] = _mm512_setzero_si512();
          continue;
        }
        const bfloat16* at = x[t] + u * kAmxUnit;
        const __m512i raw = _mm512_loadu_si512(at);
        const __m512i mag = _mm512_and_si512(raw, magnitude);
        const __mmask32 bad = _mm512_cmpge_epu16_mask(mag, inf);
        // 0 < |x| < 2^-40  <=>  |x| bits - 1 < 87 << 7 - 1 (unsigned; 0 wraps around)
        tiny_any[u] |= _mm512_cmplt_epu16_mask(_mm512_sub_epi16(mag, one), tiny_bits);
        bad_any[u] |= bad;
        v[t] = _mm512_maskz_mov_epi16(~bad, raw);
      }
      uint32_t* dst = stage + u * unit_words + q * kAmxUnit;
      _mm512_storeu_si512(dst, _mm512_permutex2var_epi16(v[0], first, v[1]));
      _mm512_storeu_si512(dst + 16, _mm512_permutex2var_epi16(v[0], second, v[1]));
    }
  }
  for (int64_t u = 0; u < units; ++u) {
    tiny[u] = tiny_any[u] != 0;
    non_finite[u] = bad_any[u] != 0;
  }
}

// 16 float32 -> 16 bfloat16, rounded as from_acc<bfloat16> does (nearest even; NaN quieted).
CK_AMX inline __m256i to_bf16_bits(__m512 v) {
  const __m512i b = _mm512_castps_si512(v);
  const __m512i rounded = _mm512_add_epi32(
      b, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1))));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
  const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(0x40));
  return _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(_mm512_srli_epi32(rounded, 16), nan, quiet));
}

// Outputs [16 ob, 16 ob + 16 Tiles) over the staged unit: C tiles 0-1 (and 2-3) for 32 coordinates, A tiles
// 4 (and 5), B tiles 6-7. The parts go lo, mid, hi; the workers in order within each.
template <int Tiles>
CK_AMX inline void multiply_unit(const AmxWeights& W, int64_t ob, const uint32_t* stage, float* C) {
  _tile_zero(0);
  _tile_zero(1);
  if (Tiles == 2) {
    _tile_zero(2);
    _tile_zero(3);
  }
  const int64_t a_stride = W.m_pad * 2;
  for (int p = 0; p < 3; ++p) {
    if (!W.part_used(p, ob) && !(Tiles == 2 && W.part_used(p, ob + 1))) continue;
    for (int64_t kb = 0; kb < W.m_pad / 32; ++kb) {
      const uint32_t* b = stage + kb * 16 * kAmxUnit;
      _tile_loadd(6, b, kAmxUnit * 4);
      _tile_loadd(7, b + 16, kAmxUnit * 4);
      _tile_loadd(4, W.tile(p, ob, kb), a_stride);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      if (Tiles == 2) {
        _tile_loadd(5, W.tile(p, ob + 1, kb), a_stride);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
    }
  }
  _tile_stored(0, C, kAmxUnit * 4);
  _tile_stored(1, C + 16, kAmxUnit * 4);
  if (Tiles == 2) {
    _tile_stored(2, C + 16 * kAmxUnit, kAmxUnit * 4);
    _tile_stored(3, C + 16 * kAmxUnit + 16, kAmxUnit * 4);
  }
}

// The cache lines of the next staged block (row by row), requested a few at a time while the tile unit
// works on this one, so that the memory reads overlap the arithmetic instead of following it.
struct NextStage {
  const RowView<bfloat16>* rows;
  int64_t m = 0, j = 0, lines = 0;  // lines per row (one per unit)
  int64_t row = 0, line = 0;

  void request(int64_t count) {
    if (lines <= 0) return;  // no next block in this thread's range
    for (; count > 0 && row < m; --count) {
      _mm_prefetch(reinterpret_cast<const char*>(rows->row(row) + j + line * kAmxUnit), _MM_HINT_T0);
      if (++line == lines) line = 0, ++row;
    }
  }
};

// out[o][j + 32 u, j + 32 u + 32) for every output o and every staged unit u not marked `skip`. Output tiles
// outside, units inside: each output row is written in runs, and the weight tiles stay in L1.
CK_AMX inline void combine_staged(const AmxWeights& W, const uint32_t* stage, int64_t units, const bool* skip, int64_t j,
                                  bfloat16* out, int64_t d, NextStage& next) {
  alignas(64) float C[32 * kAmxUnit];
  const int64_t unit_words = W.m_pad / 2 * kAmxUnit;
  const int64_t steps = (W.r_pad / 16 + 1) / 2 * units;
  const int64_t per_step = (next.m * next.lines + steps - 1) / std::max<int64_t>(steps, 1);
  for (int64_t ob = 0; ob < W.r_pad / 16; ob += 2) {
    const bool two = ob + 1 < W.r_pad / 16;
    const int64_t outs = std::min<int64_t>(two ? 32 : 16, W.r - ob * 16);
    for (int64_t u = 0; u < units; ++u) {
      next.request(per_step);
      if (skip[u]) continue;
      if (two)
        multiply_unit<2>(W, ob, stage + u * unit_words, C);
      else
        multiply_unit<1>(W, ob, stage + u * unit_words, C);
      for (int64_t o = 0; o < outs; ++o) {
        bfloat16* dst = out + (ob * 16 + o) * d + j + u * kAmxUnit;
        const __m512 scale = _mm512_set1_ps(W.scale[size_t(ob * 16 + o)]);
        const __m256i lo = to_bf16_bits(_mm512_mul_ps(_mm512_load_ps(C + o * kAmxUnit), scale));
        const __m256i hi = to_bf16_bits(_mm512_mul_ps(_mm512_load_ps(C + o * kAmxUnit + 16), scale));
        _mm512_storeu_si512(dst, _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
      }
    }
  }
}

// The unit's coordinates where some worker's value is not finite: those outputs that weigh such a worker
// are recomputed one term at a time (workers in order, zero weights skipped), which makes them non-finite.
inline void fix_non_finite(const AmxWeights& W, const RowView<bfloat16>& rows, int64_t j, bfloat16* out,
                           int64_t d) {
  for (int64_t c = 0; c < kAmxUnit; ++c)
    for (int64_t i = 0; i < W.m; ++i) {
      if (is_finite_value(to_acc(rows.row(i)[j + c]))) continue;
      for (int64_t o = 0; o < W.r; ++o) {
        if (W.w[size_t(o * W.m + i)] == 0.0f) continue;
        float acc = 0.0f;
        for (int64_t k = 0; k < W.m; ++k) {
          const float w = W.w[size_t(o * W.m + k)];
          if (w != 0.0f) acc += w * to_acc(rows.row(k)[j + c]);
        }
        out[o * d + j + c] = from_acc<bfloat16>(acc);
      }
    }
}

}  // namespace
}  // namespace ck::CK_BACKEND
#endif  // CK_AMX
