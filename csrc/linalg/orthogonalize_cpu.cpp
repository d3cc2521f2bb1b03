// Batched Gram-Schmidt on the CPU. Every sum over rows runs in one fixed order: rows in chunks of
// kRowChunk, each chunk summed in row order, the chunk sums added in chunk order. A batch of many
// matrices is split over threads (one matrix per thread, its chunks in sequence); a batch smaller than
// the thread count (PowerSGD's one large matrix per layer) splits each matrix's chunks over threads
// instead. Both give the same bits, so the result never depends on the thread count. Rows are
// contiguous, so the projections onto every later column vectorise across columns without
// reassociating any sum. Work buffer: an acc_t copy of the matrix for 16-bit P only.
#include <algorithm>
#include <type_traits>
#include <vector>

#include "../common/parallel.h"
#include "orthogonalize.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int64_t kRowChunk = 2048;

// For one n x r matrix: `parallel` splits its row chunks over threads.
template <class A>
class MatrixOrthogonalizer {
 public:
  MatrixOrthogonalizer(int64_t n, int64_t r, bool parallel)
      : n_(n), r_(r), chunks_((n + kRowChunk - 1) / kRowChunk), parallel_(parallel),
        partial_(static_cast<size_t>(std::max<int64_t>(chunks_, 1) * r)), original_(static_cast<size_t>(r)),
        dots_(static_cast<size_t>(r)) {}

  void run(A* p, A eps, A rtol) {
    const int64_t r = r_;
    // Norms of the columns as given, for the relative test.
    row_sums(original_.data(), [&](int64_t row, A* acc) {
      const A* pr = p + row * r;
      for (int64_t j = 0; j < r; ++j) acc[j] += pr[j] * pr[j];
    });
    for (A& v : original_) v = std::sqrt(v);
    for (int64_t i = 0; i < r; ++i) {
      row_sums(dots_.data(), [&](int64_t row, A* acc) { acc[i] += p[row * r + i] * p[row * r + i]; });
      const A scale = orthogonalize_scale(std::sqrt(dots_[size_t(i)]), original_[size_t(i)], eps, rtol);
      // Normalise column i and accumulate its dot products with the later columns, in one pass.
      row_sums(dots_.data(), [&](int64_t row, A* acc) {
        A* pr = p + row * r;
        const A q = pr[i] * scale;
        pr[i] = q;
        for (int64_t j = i + 1; j < r; ++j) acc[j] += q * pr[j];
      });
      if (scale == A(0) || i + 1 == r) continue;
      const A* dots = dots_.data();
      for_chunks([&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
          A* pr = p + row * r;
          const A q = pr[i];
          for (int64_t j = i + 1; j < r; ++j) pr[j] -= dots[j] * q;
        }
      });
    }
  }

 private:
  template <class F>
  void for_chunks(F&& f) {
    auto body = [&](int64_t c) { f(c * kRowChunk, std::min(n_, (c + 1) * kRowChunk)); };
    if (parallel_) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
      for (int64_t c = 0; c < chunks_; ++c) body(c);
    } else {
      for (int64_t c = 0; c < chunks_; ++c) body(c);
    }
  }

  // out[j] = the sum over rows of what f(row, acc) adds to acc[j], in the fixed chunk order.
  template <class F>
  void row_sums(A* out, F&& f) {
    std::fill(partial_.begin(), partial_.end(), A(0));
    A* partial = partial_.data();
    const int64_t r = r_;
    for_chunks([&](int64_t begin, int64_t end) {
      A* acc = partial + (begin / kRowChunk) * r;
      for (int64_t row = begin; row < end; ++row) f(row, acc);
    });
    std::fill(out, out + r, A(0));
    for (int64_t c = 0; c < chunks_; ++c)
      for (int64_t j = 0; j < r; ++j) out[j] += partial[c * r + j];
  }

  int64_t n_, r_, chunks_;
  bool parallel_;
  std::vector<A> partial_, original_, dots_;
};

template <class T>
void orthogonalize_one(T* m, int64_t n, int64_t r, typename Accumulate<T>::type eps,
                       typename Accumulate<T>::type rtol, MatrixOrthogonalizer<acc_t<T>>& worker,
                       std::vector<acc_t<T>>& work) {
  using A = acc_t<T>;
  if constexpr (std::is_same_v<T, A>) {
    worker.run(m, eps, rtol);
  } else {
    const int64_t per = n * r;
    for (int64_t e = 0; e < per; ++e) work[size_t(e)] = to_acc(m[e]);
    worker.run(work.data(), eps, rtol);
    for (int64_t e = 0; e < per; ++e) m[e] = from_acc<T>(work[size_t(e)]);
  }
}

template <class T>
void orthogonalize_typed(T* p, int64_t batch, int64_t n, int64_t r, double eps) {
  using A = acc_t<T>;
  const A rtol = orthogonalize_rtol<A>(n), e = A(eps);
  const int64_t per = n * r;
  const size_t work_size = std::is_same_v<T, A> ? size_t(0) : static_cast<size_t>(per);
  if (batch < max_threads() && n >= 2 * kRowChunk) {  // few large matrices: threads share each one
    MatrixOrthogonalizer<A> worker(n, r, true);
    std::vector<A> work(work_size);
    for (int64_t b = 0; b < batch; ++b) orthogonalize_one(p + b * per, n, r, e, rtol, worker, work);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel if (batch > 1)
#endif
  {
    MatrixOrthogonalizer<A> worker(n, r, false);
    std::vector<A> work(work_size);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t b = 0; b < batch; ++b) orthogonalize_one(p + b * per, n, r, e, rtol, worker, work);
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
