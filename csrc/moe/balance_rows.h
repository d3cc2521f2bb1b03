// CPU row loops over moe::row_stats, built twice: for any x86-64 and, where the CPU has it, with AVX-512
// (row_stats' 16 lanes are one zmm register). Both compute the same bits: the including files turn
// floating-point contraction off, so the wider build only changes how many lanes run at once.
#pragma once

#include "../common/cpu_features.h"
#include "balance.h"

namespace ck::moe {

#if defined(__GNUC__)
#define CK_MOE_INLINE __attribute__((always_inline)) inline
#else
#define CK_MOE_INLINE inline
#endif

// maxes[t], log_sums[t] for t in [begin, end); returns the sum of lse_t^2 in double (for the z-loss).
template <class T>
CK_MOE_INLINE double stats_rows_impl(const T* x, int64_t begin, int64_t end, int64_t E, acc_t<T>* maxes,
                                     acc_t<T>* log_sums, acc_t<T>* lse) {
  using A = acc_t<T>;
  double squares = 0.0;
  for (int64_t t = begin; t < end; ++t) {
    const RowStats<A> st = row_stats(x + t * E, E);
    if (maxes) maxes[t] = st.max;
    if (log_sums) log_sums[t] = st.log_sum;
    if (lse) {
      const A v = fadd(st.max, st.log_sum);
      lse[t] = v;
      squares += double(v) * double(v);
    }
  }
  return squares;
}

#ifdef CK_AVX512
template <class T>
CK_AVX512 double stats_rows_avx512(const T* x, int64_t begin, int64_t end, int64_t E, acc_t<T>* maxes,
                                   acc_t<T>* log_sums, acc_t<T>* lse) {
  return stats_rows_impl(x, begin, end, E, maxes, log_sums, lse);
}
#endif

template <class T>
double stats_rows(const T* x, int64_t begin, int64_t end, int64_t E, acc_t<T>* maxes, acc_t<T>* log_sums,
                  acc_t<T>* lse) {
#ifdef CK_AVX512
  if (has_avx512()) return stats_rows_avx512(x, begin, end, E, maxes, log_sums, lse);
#endif
  return stats_rows_impl(x, begin, end, E, maxes, log_sums, lse);
}

}  // namespace ck::moe
