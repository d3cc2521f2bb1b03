// MoE routing (commkernels.moe.route): scores, expert selection and weights per token row. Shared by the
// CPU and CUDA launches; the per-element math is CK_HD so the CPU tests exercise what the GPU runs.
//
// Per row (logits l[0..E), math in acc_t<T>: float, double for double):
//   score   softmax: p = exp(l - max l) / sum;  sigmoid: s = 1 / (1 + exp(-l));  sqrtsoftplus: sqrt(log1p(exp(l)))
//   key     what picks the experts. Without bias and groups it is the logit itself (every score is monotone
//           in it, so this is the top-k of the scores, exact in any precision); otherwise score + bias.
//   groups  group score = sum of the top min(2, E / n_group) keys of the group; the topk_group best groups
//           stay, the experts of the others are never picked (as if their key were -inf, below every kept one).
//   select  the k best keys, best first; ties to the lower expert id; NaN counts as the largest key.
//   weight  softmax "pre": p at the chosen ids (renormalised: exp(l_i - m) / sum over chosen of exp(l_j - m));
//           softmax "post": softmax of the chosen logits; sigmoid, sqrtsoftplus: s at the chosen ids
//           (renormalised: s_i / (sum over chosen of s_j + 1e-20), as Megatron-Core); then times scale.
#pragma once

#include <cmath>
#include <string>

#include "../common/array.h"
#include "../common/stream.h"

namespace ck {

enum class MoeScore : int { softmax = 0, sigmoid = 1, sqrtsoftplus = 2 };

struct RouteParams {
  int64_t tokens = 0, experts = 0, k = 0;
  MoeScore score = MoeScore::softmax;
  bool post = false;         // softmax only: top-k of the logits, then softmax over the k
  bool renormalize = true;
  bool has_bias = false;
  int64_t n_group = 0;       // 0: no groups
  int64_t topk_group = 0;
  double scale = 1.0;
  CK_HD bool by_logit() const { return !has_bias && n_group == 0; }
  CK_HD bool full_softmax() const {  // whether the whole row's softmax (its sum) is needed
    return score == MoeScore::softmax && !post && (!renormalize || !by_logit());
  }
};

// a ranks before b: larger key, NaN above everything; equal keys keep their order (lower id first).
template <class A>
CK_HD bool key_greater(A a, A b) {
  return a > b || (a != a && b == b);
}

// The C functions by precision (the same names on the host and the device).
CK_HD float moe_exp(float x) { return expf(x); }
CK_HD double moe_exp(double x) { return exp(x); }
CK_HD float moe_log1p(float x) { return log1pf(x); }
CK_HD double moe_log1p(double x) { return log1p(x); }
CK_HD float moe_sqrt(float x) { return sqrtf(x); }
CK_HD double moe_sqrt(double x) { return sqrt(x); }

template <class A>
CK_HD A moe_score(A l, MoeScore score) {
  if (score == MoeScore::sigmoid) return A(1) / (A(1) + moe_exp(-l));
  // softplus(l) = max(l, 0) + log1p(exp(-|l|)), stable for large |l|
  const A softplus = (l > A(0) ? l : A(0)) + moe_log1p(moe_exp(l > A(0) ? -l : l));
  return moe_sqrt(softplus);
}

template <class A>
CK_HD A renorm_eps(MoeScore score) {
  return score == MoeScore::softmax ? A(0) : A(1e-20);
}

// Checks route's arguments and calls f(TypeTag<T>{}) with T the logits' storage type.
template <class F>
void with_route_args(const Array& logits, const RouteParams& p, const Array& bias, const Array& weights,
                     const Array& ids, F&& f) {
  check(p.tokens >= 0 && p.experts >= 1, "logits: expected a [T, E] array with E >= 1");
  check(p.tokens * p.experts == logits.size, "logits: size does not match [T, E]");
  check(p.k >= 1 && p.k <= p.experts, "k: expected 1 <= k <= E = " + std::to_string(p.experts));
  check(p.experts <= kMaxInt32Size && p.tokens * p.k <= kMaxInt32Size, "logits: too large for int32 ids");
  check(weights.size == p.tokens * p.k && ids.size == p.tokens * p.k, "weights, ids: expected [T, k] arrays");
  ids.as<int32_t>("ids");
  const DType acc = logits.dtype == DType::float64 ? DType::float64 : DType::float32;
  if (weights.dtype != acc) throw TypeError(std::string("weights: expected dtype ") + dtype_name(acc));
  if (p.has_bias) {
    check(bias.size == p.experts, "bias: expected E = " + std::to_string(p.experts) + " elements");
    if (bias.dtype != acc) throw TypeError(std::string("bias: expected dtype ") + dtype_name(acc));
  }
  check(int(p.score) >= 0 && int(p.score) <= 2, "score: expected softmax, sigmoid or sqrtsoftplus");
  check(!p.post || (p.score == MoeScore::softmax && p.by_logit()),
        "order: 'post' needs score='softmax' and no bias or groups");
  if (p.n_group) {
    check(p.n_group >= 1 && p.experts % p.n_group == 0, "n_group: expected a divisor of E");
    check(p.topk_group >= 1 && p.topk_group <= p.n_group, "topk_group: expected 1 <= topk_group <= n_group");
    check(p.k <= p.topk_group * (p.experts / p.n_group), "k: expected k <= topk_group * E / n_group");
  }
  dispatch_float(logits.dtype, "logits", f);
}

namespace CK_BACKEND {

// weights [T, k] (float32; float64 for float64 logits), ids [T, k] int32 <- route(logits [T, E]).
// bias: E elements of weights' dtype when p.has_bias (else ignored).
void moe_route(const Array& logits, const RouteParams& p, const Array& bias, const Array& weights,
               const Array& ids, Stream stream);

}  // namespace CK_BACKEND
}  // namespace ck
