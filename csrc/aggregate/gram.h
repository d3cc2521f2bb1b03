// The Gram-matrix route of commkernels.aggregate: every distance-based rule (Krum, NNM, MDA, centered
// clipping, Weiszfeld, ARC, bucketing, Flag, ...) needs only
//   gram:    G[i][k] = sum_j (x_ij - c_j)(x_kj - c_j)   (an m x m matrix, float64 out), one pass over X;
//   combine: out[r] = sum_i W[r][i] x_i                  (W an r x m weight matrix), one pass over X;
// and host-side float64 work on the m x m matrix in between (python/commkernels/aggregate/_gram.py).
//
// The center c: zero (the plain Gram matrix), an explicit vector (e.g. the coordinate-wise median or the
// centered-clipping center), or the per-coordinate mean of the finite entries (the "mean" center, fused
// into the pass: c_j depends on coordinate j only, so each block of coordinates computes its own).
// Centering first matters in fp32: on model-like updates (a large common component) the uncentered Gram
// matrix loses the distances to cancellation; centered, an entry's error is ~eps |x_i - c| |x_k - c|.
//
// Arithmetic: the products are accumulated in acc_t<T> (float32; float64 for float64), at most 256 terms
// a running sum (CPU: 16 SIMD lanes, their sums taken in a fixed 4-level tree; CUDA: up to 32 lanes of a
// warp, a fixed 5-level butterfly), then in float64 partial sums per chunk; chunks (a count that depends
// on d and m only) are added in chunk order. So the result is deterministic, independent of the thread
// count and of the GPU.
//
// Non-finite values: a row with a NaN/Inf entry (or whose centered squared norm overflows the float32
// block sums) gets a non-finite diagonal G[i][i]; the host code treats such a row as infinitely far from
// everything. The "mean" center skips non-finite entries, so they never reach the other rows' entries.
//
// combine skips every (r, i) with W[r][i] == 0 exactly, so a non-finite row with zero weight never
// reaches the output. Its sums are acc_t, one rounding per worker in worker order; on CPUs with AMX a
// bfloat16 combine of >= 16 outputs runs on the tile unit instead (combine_amx_cpu.h: exact products, the
// same bound plus n 2^-32 sum |w x|, other bits).
#pragma once

#include <cstdint>
#include <string>

#include "../common/array.h"
#include "../common/stream.h"
#include "rows.h"

namespace ck {

enum class GramCenter : int { zero = 0, mean = 1, vector = 2 };

inline GramCenter gram_center(int64_t mode) {
  check(mode >= 0 && mode <= 2, "center: expected mode 0 (zero), 1 (mean) or 2 (vector), got " + std::to_string(mode));
  return GramCenter(mode);
}

inline void check_gram_args(const Rows& rows, GramCenter mode, const Array& center, const Array& G) {
  check(rows.n <= 4096, "X: the Gram route supports at most 4096 rows, got " + std::to_string(rows.n));
  if (mode == GramCenter::vector) {
    check(center.size == rows.d, "center: expected " + std::to_string(rows.d) + " elements, got " +
                                     std::to_string(center.size));
    if (center.dtype != rows.dtype)
      throw TypeError(std::string("center: expected dtype ") + dtype_name(rows.dtype) + " like X, got " +
                      dtype_name(center.dtype));
  }
  G.as<double>("G");
  check(G.size == rows.n * rows.n, "G: expected " + std::to_string(rows.n * rows.n) + " elements, got " +
                                       std::to_string(G.size));
}

inline void check_combine_args(const Rows& rows, const Array& W, int64_t r, const Array& out) {
  check(r >= 0, "W: expected a non-negative number of output rows");
  W.as<double>("W");
  check(W.size == r * rows.n, "W: expected " + std::to_string(r) + " x " + std::to_string(rows.n) + " weights, got " +
                                  std::to_string(W.size));
  if (out.dtype != rows.dtype)
    throw TypeError(std::string("out: expected dtype ") + dtype_name(rows.dtype) + " like X, got " +
                    dtype_name(out.dtype));
  check(out.size == r * rows.d, "out: expected " + std::to_string(r * rows.d) + " elements, got " +
                                    std::to_string(out.size));
}

// The number of chunks the coordinates are split into (a function of d only, never of the thread count)
// and the chunk boundaries, as multiples of `block`.
inline int64_t gram_chunks(int64_t d, int64_t block) {
  const int64_t blocks = (d + block - 1) / block;
  const int64_t by_size = (d + (int64_t(1) << 15) - 1) >> 15;  // at least 32768 coordinates a chunk
  int64_t c = by_size < 64 ? by_size : 64;
  if (c > blocks) c = blocks;
  return c < 1 ? 1 : c;
}

inline int64_t gram_chunk_begin(int64_t d, int64_t block, int64_t chunks, int64_t c) {
  const int64_t blocks = (d + block - 1) / block;
  const int64_t b = blocks / chunks * c + (c < blocks % chunks ? c : blocks % chunks);
  const int64_t j = b * block;
  return j < d ? j : d;
}

// Finite test that survives any optimisation level without -ffast-math: inf - inf and NaN - NaN are NaN.
template <class A>
CK_HD bool is_finite_value(A v) {
  return (v - v) == A(0);
}

namespace CK_BACKEND {

// G (m x m float64, row-major, m = rows.n) <- the Gram matrix of the rows about the center (see above).
// `center` is read only for GramCenter::vector.
void gram(const Rows& rows, GramCenter mode, const Array& center, const Array& G, Stream stream);

// out (r x d, X's dtype) <- W X, with W (r x m float64, row-major); acc_t accumulation in row order
// (see above for the CPU's AMX route).
void combine(const Rows& rows, const Array& W, int64_t r, const Array& out, Stream stream);

}  // namespace CK_BACKEND
}  // namespace ck
