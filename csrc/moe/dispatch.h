// MoE token dispatch: the plan (a stable counting sort of the T*k (token, slot) pairs by expert), permute
// (gather tokens into expert-sorted rows) and combine (gather each token's rows back, weighted). Shared by
// the CPU and CUDA launches.
//
// Plan layout, rows known on the host without reading anything back:
//   capacity C >= 0: expert e owns rows [e*Cp, (e+1)*Cp), Cp = C rounded up to align; rows = E * Cp.
//   no capacity:     expert e owns rows [offsets[e], offsets[e+1]), offsets the prefix sum of counts rounded
//                    up to align; rows = T*k + E*(align-1) when align > 1 (T*k when align = 1), the rows
//                    from offsets[E] on are padding.
//   Inside a region the first counts[e] rows are the kept pairs in token order, the rest padding.
//   src_of[row] = t*k + j for a kept pair, T*k (the sentinel) for padding; row_of[t*k + j] = row or -1.
//   block_expert[b] (align > 1): the expert owning rows [b*align, (b+1)*align), -1 for padding blocks.
#pragma once

#include <string>

#include "../common/array.h"
#include "../common/stream.h"

namespace ck {

struct PlanParams {
  int64_t tokens = 0, k = 0, experts = 0;
  int64_t capacity = -1;  // -1: none
  bool by_score = false;  // drop policy "score" (needs weights) rather than "position"
  int64_t align = 1;
  CK_HD int64_t region() const { return (capacity + align - 1) / align * align; }
  CK_HD int64_t rows() const {
    if (capacity >= 0) return experts * region();
    return tokens * k + (align > 1 ? experts * (align - 1) : 0);
  }
};


// Weights of combine / permute and the score drop policy: float32 or float64.
template <class F>
decltype(auto) dispatch_weight(DType t, const char* name, F&& f) {
  switch (t) {
    case DType::float32: return f(TypeTag<float>{});
    case DType::float64: return f(TypeTag<double>{});
    default: throw TypeError(std::string(name) + ": expected a float32 or float64 array, got " + dtype_name(t));
  }
}

inline void check_plan_args(const Array& ids, const PlanParams& p, const Array& weights, const Array& counts,
                            const Array& offsets, const Array& row_of, const Array& src_of,
                            const Array& block_expert) {
  check(p.tokens >= 0 && p.k >= 1 && ids.size == p.tokens * p.k, "ids: expected a [T, k] array with k >= 1");
  check(p.experts >= 1 && p.experts <= kMaxInt32Size, "num_experts: expected 1 <= num_experts < 2^31");
  check(p.align >= 1, "align: expected align >= 1");
  check(p.capacity >= -1, "capacity: expected capacity >= 0");
  check(p.rows() <= kMaxInt32Size, "plan: more than 2^31 - 1 rows");
  check(counts.size == p.experts && offsets.size == p.experts + 1, "counts, offsets: expected E and E + 1 elements");
  counts.as<int64_t>("counts");
  offsets.as<int64_t>("offsets");
  check(row_of.size == ids.size, "row_of: expected T * k elements");
  row_of.as<int32_t>("row_of");
  check(src_of.size == p.rows(), "src_of: expected " + std::to_string(p.rows()) + " elements");
  src_of.as<int32_t>("src_of");
  check(block_expert.size == (p.align > 1 ? p.rows() / p.align : 0), "block_expert: expected rows / align elements");
  if (p.align > 1) block_expert.as<int32_t>("block_expert");
  if (p.by_score) {
    check(p.capacity >= 0, "drop_policy: 'score' needs a capacity");
    check(weights.size == ids.size, "weights: expected T * k elements like ids");
    dispatch_weight(weights.dtype, "weights", [](auto) {});
  }
}

// Row moves: x [T, h] -> out [rows, h] (permute) and y [rows, h] -> out [T, h] (combine).
struct MoveParams {
  int64_t tokens = 0, k = 0, rows = 0, hidden = 0;
  bool weighted = false;
};

inline void check_move_args(const MoveParams& p, const Array& src, int64_t src_rows, const Array& index,
                            const Array& weights, const Array& out, int64_t out_rows) {
  check(p.tokens >= 0 && p.k >= 1 && p.rows >= 0 && p.hidden >= 0, "plan: bad sizes");
  check(src.size == src_rows * p.hidden, "x/y: size does not match the plan");
  check(out.size == out_rows * p.hidden, "out: size does not match the plan");
  if (src.dtype != out.dtype) throw TypeError("out: expected the input's dtype");
  index.as<int32_t>("plan index");
  if (p.weighted) {
    check(weights.size == p.tokens * p.k, "weights: expected [T, k] elements");
    dispatch_weight(weights.dtype, "weights", [](auto) {});
  }
}

namespace CK_BACKEND {

// counts, offsets, row_of, src_of, block_expert <- the plan of ids [T, k] (int32 or int64). Out-of-range ids
// raise on the CPU; the CUDA kernel drops them (row_of = -1), so that it never has to read anything back.
void moe_plan(const Array& ids, const PlanParams& p, const Array& weights, const Array& counts,
              const Array& offsets, const Array& row_of, const Array& src_of, const Array& block_expert,
              Stream stream);

// out[r] = x[src_of[r] / k] (times weights[src_of[r]] when weighted); zero for padding rows.
void moe_permute(const Array& x, const Array& src_of, const Array& weights, const MoveParams& p, const Array& out,
                 Stream stream);

// out[t] = sum over slots j with row_of[t, j] >= 0 of (weights[t, j] *) y[row_of[t, j]], in acc_t, slot order.
void moe_combine(const Array& y, const Array& row_of, const Array& weights, const MoveParams& p, const Array& out,
                 Stream stream);

// out[t, j] = dot(a[t], b[row_of[t, j]]) (0 for a dropped slot), in acc_t; out float32 or float64.
void moe_pair_dots(const Array& a, const Array& b, const Array& row_of, const MoveParams& p, const Array& out,
                   Stream stream);

// Both gradients of combine(y, plan, weights) given grad [T, h]: grad_y = permute(grad, weights) (rows, h)
// and grad_w = pair_dots(grad, y) [T, k], the same values as those two calls (same bits), in one pass over
// the tokens on the CPU (grad[t] read once for its k rows).
void moe_combine_backward(const Array& y, const Array& grad, const Array& row_of, const Array& src_of,
                          const Array& weights, const MoveParams& p, const Array& grad_y, const Array& grad_w,
                          Stream stream);

// The same two gradients as the two separate calls: grad_y from src_of (weighted permute), grad_w from
// row_of (pair dots). The GPU's moe_combine_backward, and the CPU's for a plan whose row_of and src_of
// disagree (not one plan() made).
inline void moe_combine_backward_two_passes(const Array& y, const Array& grad, const Array& row_of,
                                            const Array& src_of, const Array& weights, const MoveParams& p,
                                            const Array& grad_y, const Array& grad_w, Stream stream) {
  MoveParams pw = p;
  pw.weighted = true;
  moe_permute(grad, src_of, weights, pw, grad_y, stream);
  MoveParams pd = p;
  pd.weighted = false;
  moe_pair_dots(grad, y, row_of, pd, grad_w, stream);
}

}  // namespace CK_BACKEND
}  // namespace ck
