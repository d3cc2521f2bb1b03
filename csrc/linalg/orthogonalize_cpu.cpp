// Batched Gram-Schmidt on the CPU: OpenMP over the matrices of the batch, each matrix by one thread in
// row order (rows are contiguous, so the projections onto every later column vectorise across columns
// without reassociating any sum). Work buffer: one acc_t copy of a matrix per thread, for 16-bit P only.
#include <algorithm>
#include <type_traits>
#include <vector>

#include "../common/parallel.h"
#include "orthogonalize.h"

namespace ck::CK_BACKEND {
namespace {

template <class A>
void orthogonalize_matrix(A* p, int64_t n, int64_t r, A eps, A rtol, A* original, A* dots) {
  // Norms of the columns as given, for the relative test.
  std::fill(original, original + r, A(0));
  for (int64_t row = 0; row < n; ++row) {
    const A* pr = p + row * r;
    for (int64_t j = 0; j < r; ++j) original[j] += pr[j] * pr[j];
  }
  for (int64_t j = 0; j < r; ++j) original[j] = std::sqrt(original[j]);
  for (int64_t i = 0; i < r; ++i) {
    A sq = 0;
    for (int64_t row = 0; row < n; ++row) sq += p[row * r + i] * p[row * r + i];
    const A scale = orthogonalize_scale(std::sqrt(sq), original[i], eps, rtol);
    // Normalise column i and accumulate its dot products with the later columns, in one pass.
    std::fill(dots, dots + r, A(0));
    for (int64_t row = 0; row < n; ++row) {
      A* pr = p + row * r;
      const A q = pr[i] * scale;
      pr[i] = q;
      for (int64_t j = i + 1; j < r; ++j) dots[j] += q * pr[j];
    }
    if (scale == A(0) || i + 1 == r) continue;
    for (int64_t row = 0; row < n; ++row) {
      A* pr = p + row * r;
      const A q = pr[i];
      for (int64_t j = i + 1; j < r; ++j) pr[j] -= dots[j] * q;
    }
  }
}

template <class T>
void orthogonalize_typed(T* p, int64_t batch, int64_t n, int64_t r, double eps) {
  using A = acc_t<T>;
  const A rtol = orthogonalize_rtol<A>(n);
  const int64_t per = n * r;
#ifdef _OPENMP
#pragma omp parallel if (batch > 1)
#endif
  {
    std::vector<A> original(static_cast<size_t>(r)), dots(static_cast<size_t>(r));
    std::vector<A> work(std::is_same_v<T, A> ? size_t(0) : static_cast<size_t>(per));
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t b = 0; b < batch; ++b) {
      T* m = p + b * per;
      if constexpr (std::is_same_v<T, A>) {
        orthogonalize_matrix<A>(m, n, r, A(eps), rtol, original.data(), dots.data());
      } else {
        for (int64_t e = 0; e < per; ++e) work[size_t(e)] = to_acc(m[e]);
        orthogonalize_matrix<A>(work.data(), n, r, A(eps), rtol, original.data(), dots.data());
        for (int64_t e = 0; e < per; ++e) m[e] = from_acc<T>(work[size_t(e)]);
      }
    }
  }
}

}  // namespace

void orthogonalize(const Array& p, int64_t batch, int64_t n, int64_t r, double eps, Stream) {
  check_orthogonalize_args(p, batch, n, r, eps);
  dispatch_float(p.dtype, "P", [&](auto tag) {
    using T = typename decltype(tag)::type;
    orthogonalize_typed(static_cast<T*>(p.data), batch, n, r, eps);
  });
}

}  // namespace ck::CK_BACKEND
