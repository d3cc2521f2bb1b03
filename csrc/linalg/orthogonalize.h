// Batched modified Gram-Schmidt on the columns of P (..., n, r), row-major, in place: PowerSGD's
// orthogonalisation (Vogels, Karimireddy, Jaggi 2019; torch.distributed's powerSGD_hook
// _orthogonalize_gram_schmidt is the anchor). Right-looking MGS, column by column:
//   norm = ||p_i||;  if norm < max(eps, rtol * ||p_i as given||): p_i <- 0  else p_i <- p_i / norm;
//   for every later column j: p_j <- p_j - (p_i . p_j) p_i.
// The relative test makes it safe on rank-deficient input: a column that depends linearly on earlier
// ones leaves only rounding noise after the projections, and that noise is zeroed instead of being blown
// up into a spurious unit vector. rtol = 16 sqrt(n) * machine epsilon of acc_t (float32, float64 for
// float64). So the result has orthonormal columns and zero columns, never NaN from a zero column.
// Arithmetic in acc_t: 16-bit P is read into an acc_t work buffer and rounded back once at the end.
// Every sum over rows runs in a fixed order (orthogonalize_cpu.cpp: fixed row chunks combined in
// order), so the result is deterministic and independent of the thread count.
#pragma once

#include <cmath>
#include <string>

#include "../common/array.h"
#include "../common/half.h"
#include "../common/stream.h"

namespace ck {

template <class A> constexpr A machine_epsilon();
template <> constexpr float machine_epsilon<float>() { return 1.1920929e-07f; }
template <> constexpr double machine_epsilon<double>() { return 2.220446049250313e-16; }

// The relative threshold below which a projected column counts as dependent on the earlier ones.
template <class A>
inline A orthogonalize_rtol(int64_t n) {
  return A(16) * std::sqrt(A(n)) * machine_epsilon<A>();
}

// The factor a projected column of norm `norm` (whose norm before any projection was `original`) is
// scaled by: 1/norm, or 0 for a column that counts as zero.
template <class A>
CK_HD A orthogonalize_scale(A norm, A original, A eps, A rtol) {
  const A floor = eps > rtol * original ? eps : rtol * original;
  return norm < floor ? A(0) : A(1) / norm;
}

inline void check_orthogonalize_args(const Array& p, int64_t batch, int64_t n, int64_t r, double eps) {
  check(batch >= 0 && n >= 0 && r >= 0, "P: expected non-negative dimensions");
  check(batch * n * r == p.size, "P: expected batch * n * r = " + std::to_string(batch * n * r) +
                                     " elements, got " + std::to_string(p.size));
  check(eps >= 0 && std::isfinite(eps), "eps: expected a finite eps >= 0, got " + std::to_string(eps));
}

}  // namespace ck

namespace ck::CK_BACKEND {

// P (batch matrices of n x r, row-major) <- its columns orthonormalised in place (see above).
void orthogonalize(const Array& p, int64_t batch, int64_t n, int64_t r, double eps, Stream stream);

}  // namespace ck::CK_BACKEND
