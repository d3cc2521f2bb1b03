// Message passing over a Graph's CSR by destination (indptr (N + 1,) int64, indices (E,) the source node of
// each slot, eid (E,) int64 the edge id of each slot): spmm, sddmm and edge_softmax, shared by the CPU and
// CUDA launches. Node features are (N, H, D) rows (H heads of D features; H = 1 for plain features); per-edge
// values (weights, scores) are (E, H) in edge order, or (E,) broadcast over the heads where stated.
//
// Every destination row is computed by one thread (one warp on the GPU) walking its slots in order, so the
// results are deterministic and need no atomics; backward passes run the same kernels over the CSC.
#pragma once

#include <cmath>
#include <string>

#include "../common/array.h"
#include "../common/stream.h"
#include "scatter.h"

namespace ck {

struct CsrView {
  const int64_t* indptr;
  const void* indices;  // int32 or int64 (indices_dtype)
  DType indices_dtype;
  const int64_t* eid;
  int64_t rows, edges;
};

inline CsrView csr_view(const Array& indptr, const Array& indices, const Array& eid) {
  check(indptr.size >= 1, "indptr: expected num_nodes + 1 entries");
  check(indices.size == eid.size, "eid: expected one entry per slot");
  return CsrView{indptr.as<int64_t>("indptr"), indices.data, indices.dtype, eid.as<int64_t>("eid"), indptr.size - 1,
                 indices.size};
}

// edge softmax statistics, updated online: m the running max, s the sum of exp(v - m). -inf scores add
// nothing; a row whose scores are all -inf (or that has none) keeps s = 0 and its outputs are 0.
CK_HD float exp_acc(float v) { return expf(v); }
CK_HD double exp_acc(double v) { return exp(v); }
CK_HD float log_acc(float v) { return logf(v); }
CK_HD double log_acc(double v) { return log(v); }

template <class A> struct Online {
  A m, s;
};

template <class A> CK_HD void online_add(Online<A>& o, A v) {
  if (v == -INFINITY) return;
  if (v > o.m) {
    o.s = o.s * exp_acc(o.m - v) + A(1);
    o.m = v;
  } else {
    o.s += exp_acc(v - o.m);
  }
}

template <class A> CK_HD A online_prob(const Online<A>& o, A v) {
  return o.s > A(0) && v != -INFINITY ? exp_acc(v - o.m) / o.s : A(0);
}

namespace CK_BACKEND {

// out[i, h, :] <- reduce over the in-edges e of i (slot order) of weight[e, h] * x[src(e), h, :]; weight: empty
// (all ones), (E,) or (E, heads), x's dtype, in edge order, or in CSR slot order when weight_in_slots (a
// graph's cached weight_csr: read sequentially). reduce: sum, mean, max or min; arg[i, h, d] <- the edge
// id that gave out[i, h, d] (E for an empty row), for max / min.
void spmm(const Array& x, int64_t heads, int64_t d, const Array& indptr, const Array& indices, const Array& eid,
          const Array& weight, bool weight_in_slots, int64_t reduce, const Array& out, const Array& arg,
          Stream stream);

// out[e, h] <- a[dst(e), h, :] . b[src(e), h, :] for every edge (written in edge order).
void sddmm(const Array& a, const Array& b, int64_t heads, int64_t d, const Array& indptr, const Array& indices,
           const Array& eid, const Array& out, Stream stream);

// out[e, h] <- softmax over the in-edges of dst(e) of scores[., h] (0 for -inf scores and all -inf rows).
// Both the CSR (indptr, eid) and dst (E,) in edge order are passed: the CPU streams the edges in edge order
// (its statistics per node stay cache-resident; each node's edges still come in ascending edge id, the
// CSR's order), the GPU walks the CSR.
void edge_softmax(const Array& scores, int64_t heads, const Array& indptr, const Array& eid, const Array& dst,
                  const Array& out, Stream stream);

// grad_scores[e, h] <- y[e, h] * (grad[e, h] - sum over the in-edges e' of dst(e) of y[e', h] grad[e', h]).
void edge_softmax_backward(const Array& y, const Array& grad, int64_t heads, const Array& indptr, const Array& eid,
                           const Array& dst, const Array& grad_scores, Stream stream);

}  // namespace CK_BACKEND
}  // namespace ck
