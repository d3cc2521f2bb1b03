// Fused graph attention: for each destination i and head h, over the in-edges e of i (source j),
//   logit_e = scale * q[i, h] . k[j, h] + bias[e, h],   a_e = softmax over the in-edges of logit,
//   out[i, h] = sum_e a_e v[j, h],   lse[i, h] = log sum_e exp(logit_e)   (-inf, and out 0, for a row
//   with no edge or only -inf logits).
// The forward is one pass per row with an online max / sum (flash-attention style): no per-edge array is
// written. The backward recomputes the logits from lse: a pass over the CSR (grad q, grad bias and
// delta[i, h] = grad_out[i, h] . out[i, h]) and one over the CSC (grad k, grad v), each row owned by one
// thread: deterministic, no atomics.
#pragma once

#include "spmm.h"

namespace ck {

constexpr int64_t kMaxAttentionDim = 1024;  // per-row accumulators live on the stack

struct AttentionShape {
  int64_t heads, d, dv, bias_heads;  // bias_heads: 0 (no bias), 1 (E,) broadcast, or heads
};

inline AttentionShape check_attention(const Array& q, const Array& k, const Array& v, const Array& bias, int64_t heads,
                                      int64_t d, int64_t dv, int64_t rows, int64_t edges) {
  check(heads >= 1 && d >= 1 && dv >= 1, "q, v: expected (N, heads, D) and (N, heads, Dv) with D, Dv >= 1");
  check(d <= kMaxAttentionDim && dv <= kMaxAttentionDim, "q, v: head dimensions above 1024 are not supported");
  check(q.size == rows * heads * d, "q: expected (num_nodes, heads, D)");
  check(k.size == q.size && k.dtype == q.dtype, "k: expected q's shape and dtype");
  check(v.size == rows * heads * dv && v.dtype == q.dtype, "v: expected (num_nodes, heads, Dv) of q's dtype");
  check(bias.size == 0 || bias.size == edges || bias.size == edges * heads, "edge_bias: expected (E,) or (E, heads)");
  check(bias.size == 0 || bias.dtype == q.dtype, "edge_bias: expected q's dtype");
  const int64_t bh = bias.size == 0 ? 0 : (edges ? bias.size / edges : 1);
  return AttentionShape{heads, d, dv, bh};
}

namespace CK_BACKEND {

void attention_forward(const Array& q, const Array& k, const Array& v, const Array& bias, int64_t heads, int64_t d,
                       int64_t dv, double scale, const Array& indptr, const Array& indices, const Array& eid,
                       const Array& out, const Array& lse, Stream stream);

// grad_q (q's shape), grad_bias (bias' shape, or empty: not wanted) and delta (N, heads; lse's dtype).
void attention_backward_dst(const Array& q, const Array& k, const Array& v, const Array& bias, const Array& out,
                            const Array& grad_out, const Array& lse, int64_t heads, int64_t d, int64_t dv,
                            double scale, const Array& indptr, const Array& indices, const Array& eid,
                            const Array& grad_q, const Array& grad_bias, const Array& delta, Stream stream);

// grad_k and grad_v over the CSC (cindptr over sources, cindices the destination of each slot).
void attention_backward_src(const Array& q, const Array& k, const Array& v, const Array& bias, const Array& grad_out,
                            const Array& lse, const Array& delta, int64_t heads, int64_t d, int64_t dv, double scale,
                            const Array& cindptr, const Array& cindices, const Array& ceid, const Array& grad_k,
                            const Array& grad_v, Stream stream);

}  // namespace CK_BACKEND
}  // namespace ck
