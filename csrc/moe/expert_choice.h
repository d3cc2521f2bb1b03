// Expert-choice routing (Zhou et al. 2022, arXiv 2202.09368): S = softmax(scores) over the E experts of
// each token; expert e takes the C tokens with the largest S[:, e], best first.
//
// Tokens are ranked by their log-probability key(t, e) = (x[t, e] - max_t) - log_sum_t (moe::row_stats; the
// same bits on the CPU and the GPU for float32/16-bit inputs), as an order-preserving unsigned integer in
// which NaN is the largest; ties go to the lower token index. The weight is exp(key).
#pragma once

#include <cstdint>
#include <string>

#include "balance.h"

namespace ck {
namespace moe {

template <class A> struct OrderKey;
template <> struct OrderKey<float> { using type = uint32_t; };
template <> struct OrderKey<double> { using type = uint64_t; };
template <class A> using order_t = typename OrderKey<A>::type;

// An unsigned integer with the order of the float (every NaN canonicalised above +inf).
template <class A>
CK_MOE_HD order_t<A> order_key(A v) {
  using U = order_t<A>;
  constexpr int kBits = 8 * sizeof(U);
  if (v != v) v = std::numeric_limits<A>::quiet_NaN();
  U u = bit_cast<U>(v);
  if (v != v) u &= ~(U(1) << (kBits - 1));  // a positive NaN
  return (u >> (kBits - 1)) ? ~u : (u | (U(1) << (kBits - 1)));
}

template <class A>
CK_MOE_HD A from_order_key(order_t<A> u) {
  using U = order_t<A>;
  constexpr int kBits = 8 * sizeof(U);
  return bit_cast<A>((u >> (kBits - 1)) ? (u & ~(U(1) << (kBits - 1))) : ~u);
}

template <class T>
CK_MOE_HD acc_t<T> choice_key(T x, acc_t<T> max, acc_t<T> log_sum) {
  return fsub(fsub(to_acc(x), max), log_sum);
}

inline void check_expert_choice(const Array& scores, int64_t T, int64_t E, int64_t C, const Array& weights,
                                const Array& ids) {
  check_matrix(scores, T, E, "scores");
  check(C >= 0 && C <= T, "capacity: expected 0 <= capacity <= T = " + std::to_string(T) + ", got " +
                              std::to_string(C));
  check_size_fits_int32(T, "scores");
  check_acc_array(weights, scores.dtype, E * C, "weights");
  check(ids.dtype == DType::int32 && ids.size == E * C, "token_ids: expected E * capacity int32 elements");
}

}  // namespace moe

namespace CK_BACKEND {

// scores [T, E]; weights [E, C] (accumulation dtype) and token_ids [E, C] (int32) <- for each expert, its C
// best tokens in descending order of key (ties to the lower token index) and their probabilities.
void expert_choice(const Array& scores, int64_t T, int64_t E, int64_t C, const Array& weights,
                   const Array& token_ids, Stream stream);

}  // namespace CK_BACKEND
}  // namespace ck
