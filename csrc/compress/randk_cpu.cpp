// Rand-k on the CPU: the k permutation entries computed in parallel (16 lanes at a time with AVX-512),
// then a radix sort into ascending order.
#include <algorithm>
#include <utility>
#include <vector>

#include "../common/cpu_features.h"
#include "../common/parallel.h"
#include "../common/philox_x8.h"
#include "api.h"
#include "args.h"
#include "randk.h"

namespace ck::CK_BACKEND {
namespace {

// Sorts n non-negative int32 values below 2^bits ascending: LSD radix sort, 11 bits a digit, with every
// digit's histogram taken in one read.
void radix_sort(int32_t* data, int64_t n, int bits) {
  constexpr int kDigitBits = 11, kBins = 1 << kDigitBits;
  const int digits = (bits + kDigitBits - 1) / kDigitBits;  // bits <= 31: at most 3
  std::vector<uint32_t> count(size_t(digits) * kBins, 0);
  for (int64_t i = 0; i < n; ++i)
    for (int d = 0; d < digits; ++d) ++count[size_t(d) * kBins + ((uint32_t(data[i]) >> (d * kDigitBits)) & (kBins - 1))];
  std::vector<int32_t> scratch(static_cast<size_t>(n));
  int32_t* src = data;
  int32_t* dst = scratch.data();
  for (int d = 0; d < digits; ++d) {
    uint32_t* c = count.data() + size_t(d) * kBins;
    uint32_t sum = 0;
    for (int b = 0; b < kBins; ++b) sum += std::exchange(c[b], sum);  // exclusive prefix sums
    for (int64_t i = 0; i < n; ++i) dst[c[(uint32_t(src[i]) >> (d * kDigitBits)) & (kBins - 1)]++] = src[i];
    std::swap(src, dst);
  }
  if (src != data) std::copy(src, src + n, data);
}

// Writes { perm(i) : begin <= i < end } to out[begin, end), in some order (the caller sorts).
void permute_range(const FeistelPermutation& perm, int64_t begin, int64_t end, int32_t* out) {
  for (int64_t i = begin; i < end; ++i) out[i] = int32_t(perm(uint64_t(i)));
}

#ifdef CK_AVX512
// FeistelPermutation::encrypt on V vectors of 16 words at once (words < 2^31). The V vectors' Philox
// rounds are interleaved: one vector's rounds are a chain of dependent multiplies (latency-bound), V of
// them keep the multiplier busy.
template <int V>
CK_AVX512 inline void encrypt_x16(const FeistelPermutation& perm, __m512i* word) {
  const unsigned lo_bits = unsigned(perm.lo_bits());
  const __m512i lo_mask = _mm512_set1_epi32(int(perm.lo_mask())), hi_mask = _mm512_set1_epi32(int(perm.hi_mask()));
  __m512i hi[V], lo[V];
  for (int v = 0; v < V; ++v) {
    hi[v] = _mm512_srli_epi32(word[v], lo_bits);
    lo[v] = _mm512_and_si512(word[v], lo_mask);
  }
  for (uint32_t r = 0; r < 4; ++r) {
    __m512i* from = r % 2 == 0 ? lo : hi;  // even rounds: hi ^= F(lo); odd rounds: lo ^= F(hi)
    __m512i* into = r % 2 == 0 ? hi : lo;
    const __m512i mask = r % 2 == 0 ? hi_mask : lo_mask;
    __m512i a[2 * V], c0[2 * V], c1[2 * V], c2[2 * V], c3[2 * V];
    for (int v = 0; v < V; ++v) {
      a[2 * v] = _mm512_cvtepu32_epi64(_mm512_castsi512_si256(from[v]));
      a[2 * v + 1] = _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(from[v], 1));
    }
    philox_x8<2 * V>(a, r, perm.step, perm.seed, c0, c1, c2, c3);
    for (int v = 0; v < V; ++v) {
      const __m512i f = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(c0[2 * v])),
                                           _mm512_cvtepi64_epi32(c0[2 * v + 1]), 1);
      into[v] = _mm512_xor_si512(into[v], _mm512_and_si512(f, mask));
    }
  }
  for (int v = 0; v < V; ++v) word[v] = _mm512_or_si512(_mm512_slli_epi32(hi[v], lo_bits), lo[v]);
}

// permute_range, kVectors x 16 lanes at a time: a lane whose word is still >= size keeps walking; a lane
// that is done emits its word and takes the next index.
CK_AVX512 void permute_range_avx512(const FeistelPermutation& perm, int64_t begin, int64_t end, int32_t* out) {
  constexpr int kVectors = 4;
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i size = _mm512_set1_epi32(int(perm.size));  // size < 2^31
  __m512i word[kVectors];
  __mmask16 live[kVectors];
  for (int v = 0; v < kVectors; ++v) {
    word[v] = _mm512_setzero_si512();
    live[v] = 0;
  }
  for (int64_t next = begin, o = begin;;) {
    bool any = false;
    for (int v = 0; v < kVectors; ++v) {
      const __mmask16 free = __mmask16(~live[v]);
      const int take = int(std::min<int64_t>(__builtin_popcount(free), end - next));
      if (take > 0) {  // free lanes take the next indices, in lane order
        const __mmask16 filled = __mmask16(_pdep_u32((1u << take) - 1, free));
        word[v] = _mm512_mask_expand_epi32(word[v], filled, _mm512_add_epi32(_mm512_set1_epi32(int(next)), lane));
        live[v] = __mmask16(live[v] | filled);
        next += take;
      }
      any |= live[v] != 0;
    }
    if (!any) break;
    encrypt_x16<kVectors>(perm, word);
    for (int v = 0; v < kVectors; ++v) {
      const __mmask16 done = _mm512_mask_cmplt_epu32_mask(live[v], word[v], size);
      _mm512_mask_compressstoreu_epi32(out + o, done, word[v]);
      o += __builtin_popcount(done);
      live[v] = __mmask16(live[v] & ~done);
    }
  }
}
#endif

void permute_range_dispatch(const FeistelPermutation& perm, int64_t begin, int64_t end, int32_t* out) {
#ifdef CK_AVX512
  if (has_avx512()) return permute_range_avx512(perm, begin, end, out);
#endif
  permute_range(perm, begin, end, out);
}

}  // namespace

void randk_indices(int64_t size, int64_t k, uint64_t seed, uint64_t step, const Array& indices, Stream) {
  check_randk_args(size, k, indices);
  int32_t* out = indices.as<int32_t>("indices");
  const FeistelPermutation perm = FeistelPermutation::make(uint64_t(size), seed, step);
  parallel_for(k, 1 << 12, [&](int64_t begin, int64_t end) { permute_range_dispatch(perm, begin, end, out); });
  radix_sort(out, k, perm.bits);
}

void randk(const Array& x, int64_t k, uint64_t seed, uint64_t step, bool unbiased, const Array& values,
           const Array& indices, Stream stream) {
  randk_indices(x.size, k, seed, step, indices, stream);
  const int32_t* index = static_cast<const int32_t*>(indices.data);
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    check_sparse_outputs<T>(k, values, indices);
    const T* src = static_cast<const T*>(x.data);
    T* dst = values.as<T>("values");
    const auto scale = acc_t<T>(randk_scale(x.size, k, unbiased));
    parallel_for(k, 1 << 14, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) dst[j] = from_acc<T>(acc_t<T>(to_acc(src[index[j]])) * scale);
    });
  });
}

}  // namespace ck::CK_BACKEND
