// Rand-k on the CPU: the k permutation entries computed in parallel (16 lanes at a time with AVX-512),
// then a radix sort into ascending order.
#include <algorithm>
#include <utility>
#include <vector>

#include "../common/cpu_features.h"
#include "../common/parallel.h"
#include "../common/philox_x16.h"
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
// FeistelPermutation::encrypt on 16 words at once (words < 2^31).
CK_AVX512 inline __m512i encrypt_x16(const FeistelPermutation& perm, __m512i word) {
  const unsigned lo_bits = unsigned(perm.lo_bits());
  const __m512i lo_mask = _mm512_set1_epi32(int(perm.lo_mask())), hi_mask = _mm512_set1_epi32(int(perm.hi_mask()));
  __m512i hi = _mm512_srli_epi32(word, lo_bits), lo = _mm512_and_si512(word, lo_mask);
  for (uint32_t r = 0; r < 4; ++r) {
    if (r % 2 == 0)
      hi = _mm512_xor_si512(hi, _mm512_and_si512(philox_x16(perm.seed, perm.step, lo, r).v[0], hi_mask));
    else
      lo = _mm512_xor_si512(lo, _mm512_and_si512(philox_x16(perm.seed, perm.step, hi, r).v[0], lo_mask));
  }
  return _mm512_or_si512(_mm512_slli_epi32(hi, lo_bits), lo);
}

// permute_range, 16 lanes at a time: a lane whose word is still >= size keeps walking; a lane that is
// done emits its word and takes the next index.
CK_AVX512 void permute_range_avx512(const FeistelPermutation& perm, int64_t begin, int64_t end, int32_t* out) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i size = _mm512_set1_epi32(int(perm.size));  // size < 2^31
  __m512i word = _mm512_setzero_si512();
  __mmask16 live = 0;
  for (int64_t next = begin, o = begin;;) {
    const __mmask16 free = __mmask16(~live);
    const int take = int(std::min<int64_t>(__builtin_popcount(free), end - next));
    if (take > 0) {  // free lanes take the next indices, in lane order
      const __mmask16 filled = __mmask16(_pdep_u32((1u << take) - 1, free));
      word = _mm512_mask_expand_epi32(word, filled, _mm512_add_epi32(_mm512_set1_epi32(int(next)), lane));
      live = __mmask16(live | filled);
      next += take;
    }
    if (!live) break;
    word = encrypt_x16(perm, word);
    const __mmask16 done = _mm512_mask_cmplt_epu32_mask(live, word, size);
    _mm512_mask_compressstoreu_epi32(out + o, done, word);
    o += __builtin_popcount(done);
    live = __mmask16(live & ~done);
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
