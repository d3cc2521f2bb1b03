// Threshold selection: the entries with |x| > v, in index order. Shared by the CPU and CUDA launches.
//
// The comparison is exact (as if in float64) and runs on integer magnitude keys (topk.h): for x's dtype T,
// threshold_key<T>(v) is the smallest key whose magnitude exceeds v, so |x| > v  <=>  key(x) >= that key,
// and NaN (whose key lies above inf's) never passes.
#pragma once

#include <cmath>
#include <string>

#include "../common/array.h"
#include "../common/stream.h"
#include "topk.h"

namespace ck {

// The smallest key k <= inf_key<T>() whose value exceeds v; inf_key<T>() + 1 when none does.
template <class T>
key_t<T> threshold_key(double v) {
  using bits_t = typename MagnitudeKey<T>::bits_t;
  uint64_t lo = 0, hi = inf_key<T>() + 1;  // the answer lies in [lo, hi]
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo) / 2;
    if (double(to_acc(bit_cast<T>(bits_t(mid)))) > v) hi = mid;
    else lo = mid + 1;
  }
  return key_t<T>(lo);
}

template <class T>
CK_HD bool above_threshold(T x, key_t<T> min_key) {
  const key_t<T> key = magnitude_key(x);
  return key >= min_key && key <= key_t<T>(inf_key<T>());
}

// Checks threshold's arguments and calls f(TypeTag<T>{}).
template <class F>
void with_threshold_args(const Array& x, double v, const Array& counts, F&& f) {
  check(!std::isnan(v), "v: expected a number, got NaN");
  check_size_fits_int32(x.size, "x");
  check(counts.size >= 1, "counts: expected at least one chunk");
  counts.as<int64_t>("counts");
  dispatch_float(x.dtype, "x", f);
}

namespace CK_BACKEND {

// x is split into counts.size chunks (as parallel_chunks splits it); counts[c] <- the number of entries of
// chunk c with |x| > v.
void threshold_count(const Array& x, double v, const Array& counts, Stream stream);

// (values, indices) <- the entries with |x| > v, indices ascending (int32), given threshold_count's counts;
// values and indices must have exactly sum(counts) elements.
void threshold_write(const Array& x, double v, const Array& counts, const Array& values, const Array& indices,
                     Stream stream);

}  // namespace CK_BACKEND
}  // namespace ck
