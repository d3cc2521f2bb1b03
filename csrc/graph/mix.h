// Gossip mixing Y = W^rounds X over n agents whose vectors are the rows of X (n, d), and the consensus
// distance of X. Row = receiver: y_i = sum_j W[i, j] x_j.
//
// W is dense (n * n row-major) or a CSR by destination (indptr int64 [n + 1], indices int32/int64 = the
// sender of each slot, weight = W[i, indices[s]] for slot s of row i). Weights are in the accumulation
// type of X (float32 for float32/float16/bfloat16 X, float64 for float64 X). Each output element is
// accumulated over j (or over the slots) in ascending order, so the result is the same whatever the
// thread count; all the rounds are applied to one tile of columns (all n rows) before the next tile.
// The CPU mix_csr checks indptr and indices; the CUDA one trusts them (the Python layer passes the
// validated views of a Graph).
#pragma once

#include <string>

#include "../common/array.h"
#include "../common/stream.h"

namespace ck::CK_BACKEND {

void mix_dense(const Array& x, const Array& w, int64_t n, int64_t d, int64_t rounds, const Array& y, Stream stream);

void mix_csr(const Array& x, const Array& indptr, const Array& indices, const Array& weight, int64_t n, int64_t d,
             int64_t rounds, const Array& y, Stream stream);

// out[0] <- sum_i ||x_i - mean_i x_i||^2 / n (float64, accumulated in float64 in a fixed order).
void consensus_distance(const Array& x, int64_t n, int64_t d, const Array& out, Stream stream);

}  // namespace ck::CK_BACKEND

namespace ck::graph {

inline DType acc_dtype(DType t) { return t == DType::float64 ? DType::float64 : DType::float32; }

inline void check_mix_common(const Array& x, int64_t n, int64_t d, int64_t rounds, const Array& y) {
  check(n >= 0 && d >= 0, "x: expected a non-negative shape");
  check(rounds >= 0, "rounds: expected >= 0, got " + std::to_string(rounds));
  check(x.size == n * d, "x: expected n * d elements");
  if (y.dtype != x.dtype) throw TypeError("y: expected the dtype of x");
  check(y.size == n * d, "y: expected n * d elements");
}

inline void check_mix_dense(const Array& x, const Array& w, int64_t n, int64_t d, int64_t rounds, const Array& y) {
  check_mix_common(x, n, d, rounds, y);
  if (w.dtype != acc_dtype(x.dtype))
    throw TypeError(std::string("W: expected dtype ") + dtype_name(acc_dtype(x.dtype)) + " for x of dtype " +
                    dtype_name(x.dtype));
  check(w.size == n * n, "W: expected n * n elements");
}

inline void check_mix_csr(const Array& x, const Array& indptr, const Array& indices, const Array& weight, int64_t n,
                          int64_t d, int64_t rounds, const Array& y) {
  check_mix_common(x, n, d, rounds, y);
  if (indptr.dtype != DType::int64) throw TypeError("indptr: expected int64");
  check(indptr.size == n + 1, "indptr: expected n + 1 entries");
  if (indices.dtype != DType::int32 && indices.dtype != DType::int64)
    throw TypeError("indices: expected int32 or int64");
  if (weight.dtype != acc_dtype(x.dtype))
    throw TypeError(std::string("edge_weight: expected dtype ") + dtype_name(acc_dtype(x.dtype)) + " for x of dtype " +
                    dtype_name(x.dtype));
  check(weight.size == indices.size, "edge_weight: expected one weight per slot of indices");
}

}  // namespace ck::graph
