// Rand-k on the CPU: k permutation entries computed in parallel, then an LSD radix sort into ascending order.
#include <vector>

#include "../common/parallel.h"
#include "api.h"
#include "args.h"
#include "randk.h"

namespace ck::CK_BACKEND {
namespace {

// Sorts n non-negative int32 values below 2^bits ascending: LSD radix sort, 11 bits a pass.
void radix_sort(int32_t* data, int64_t n, int bits) {
  constexpr int kDigitBits = 11;
  std::vector<int32_t> scratch(static_cast<size_t>(n));
  int32_t* src = data;
  int32_t* dst = scratch.data();
  for (int shift = 0; shift < bits; shift += kDigitBits) {
    int64_t count[(1 << kDigitBits) + 1] = {};
    for (int64_t i = 0; i < n; ++i) ++count[((uint32_t(src[i]) >> shift) & ((1 << kDigitBits) - 1)) + 1];
    for (int d = 0; d < (1 << kDigitBits); ++d) count[d + 1] += count[d];
    for (int64_t i = 0; i < n; ++i) dst[count[(uint32_t(src[i]) >> shift) & ((1 << kDigitBits) - 1)]++] = src[i];
    std::swap(src, dst);
  }
  if (src != data) std::copy(src, src + n, data);
}

}  // namespace

void randk_indices(int64_t size, int64_t k, uint64_t seed, uint64_t step, const Array& indices, Stream) {
  check_randk_args(size, k, indices);
  int32_t* out = indices.as<int32_t>("indices");
  const FeistelPermutation perm = FeistelPermutation::make(uint64_t(size), seed, step);
  parallel_for(k, 1 << 12, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = int32_t(perm(uint64_t(i)));
  });
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
