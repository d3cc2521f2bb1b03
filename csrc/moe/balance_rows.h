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

// row_stats of 16 rows at once, the rows in the vector lanes (for few experts, where a row fills few of
// row_stats' own lanes): the same operations in the same order per row, hence the same bits.
template <class T>
CK_MOE_INLINE void stats_16_rows(const T* x, int64_t E, acc_t<T>* max_out, acc_t<T>* log_sum_out) {
  using A = acc_t<T>;
  constexpr int R = kLanes;
  A m[R];
  for (int r = 0; r < R; ++r) m[r] = -std::numeric_limits<A>::infinity();
  for (int64_t j = 0; j < E; ++j)
    for (int r = 0; r < R; ++r) {
      const A v = to_acc(x[r * E + j]);
      m[r] = v > m[r] ? v : m[r];
    }
  for (int r = 0; r < R; ++r)
    m[r] = (m[r] == std::numeric_limits<A>::infinity() || m[r] == -std::numeric_limits<A>::infinity()) ? A(0) : m[r];
  A part[kLanes][R];  // part[l][r]: row r's lane l (its exponentials j = l mod 16, in order of j)
  for (int l = 0; l < kLanes; ++l)
    for (int r = 0; r < R; ++r) part[l][r] = A(0);
  for (int64_t j = 0; j < E; ++j)
    for (int r = 0; r < R; ++r) part[j % kLanes][r] = fadd(part[j % kLanes][r], exp_acc(fsub(to_acc(x[r * E + j]), m[r])));
  for (int w = kLanes / 2; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l)
      for (int r = 0; r < R; ++r) part[l][r] = fadd(part[l][r], part[l + w][r]);
  for (int r = 0; r < R; ++r) {
    max_out[r] = m[r];
    log_sum_out[r] = log_acc(part[0][r]);
  }
}

// maxes[t], log_sums[t] for t in [begin, end); with lse, also lse[t] and the return value: the sum of
// lse_t^2 in double (for the z-loss).
template <class T>
CK_MOE_INLINE double stats_rows_impl(const T* x, int64_t begin, int64_t end, int64_t E, acc_t<T>* maxes,
                                     acc_t<T>* log_sums, acc_t<T>* lse) {
  using A = acc_t<T>;
  double squares = 0.0;
  auto put = [&](int64_t t, A max, A log_sum) {
    if (maxes) maxes[t] = max;
    if (log_sums) log_sums[t] = log_sum;
    if (lse) {
      const A v = fadd(max, log_sum);
      lse[t] = v;
      squares += double(v) * double(v);
    }
  };
  int64_t t = begin;
  if (E < 128)
    for (; t + kLanes <= end; t += kLanes) {
      A max[kLanes], log_sum[kLanes];
      stats_16_rows(x + t * E, E, max, log_sum);
      for (int r = 0; r < kLanes; ++r) put(t + r, max[r], log_sum[r]);
    }
  for (; t < end; ++t) {
    const RowStats<A> st = row_stats(x + t * E, E);
    put(t, st.max, st.log_sum);
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
