// The weighted mean on the CPU: coordinate blocks of kBlock in parallel; inside a block, each worker's
// slice is read once (contiguously) and added into a stack accumulator, worker 0 first.
#include "../common/cpu_features.h"
#include "../common/parallel.h"
#include "mean.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int64_t kBlock = 8192;

// One block [begin, end) of at most kBlock coordinates (inlined into the portable and the AVX-512 builds).
template <class T>
inline __attribute__((always_inline)) void mean_block(const RowView<T>& X, const acc_t<T>* w, acc_t<T> total,
                                                      T* out, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  A acc[kBlock];
  const int64_t len = end - begin;
  const T* x0 = X.row(0) + begin;
  for (int64_t j = 0; j < len; ++j) acc[j] = w[0] * to_acc(x0[j]);
  // Eight workers per sweep: acc[j] stays in a register across them, so the accumulator is loaded and
  // stored once per eight rows instead of once per row, and eight rows stream in side by side (more
  // misses in flight). The additions keep their order (worker 1, 2, 3, ...), so the bits are those of
  // the one-row loop.
  constexpr int kSweep = 8;
  int64_t i = 1;
  for (; i + kSweep <= X.n; i += kSweep) {
    const T* x[kSweep];
    A wi[kSweep];
    for (int r = 0; r < kSweep; ++r) {
      x[r] = X.row(i + r) + begin;
      wi[r] = w[i + r];
    }
    for (int64_t j = 0; j < len; ++j) {
      A a = acc[j];
      for (int r = 0; r < kSweep; ++r) a += wi[r] * to_acc(x[r][j]);
      acc[j] = a;
    }
  }
  for (; i < X.n; ++i) {
    const T* xi = X.row(i) + begin;
    const A wi = w[i];
    for (int64_t j = 0; j < len; ++j) acc[j] += wi * to_acc(xi[j]);
  }
  for (int64_t j = 0; j < len; ++j) out[begin + j] = from_acc<T>(acc[j] / total);
}

template <class T>
void mean_block_portable(const RowView<T>& X, const acc_t<T>* w, acc_t<T> total, T* out, int64_t begin,
                         int64_t end) {
  mean_block(X, w, total, out, begin, end);
}

#ifdef CK_AVX512
template <class T>
CK_AVX512 void mean_block_avx512(const RowView<T>& X, const acc_t<T>* w, acc_t<T> total, T* out, int64_t begin,
                                 int64_t end) {
  mean_block(X, w, total, out, begin, end);
}
#endif

template <class T>
void mean_blocks(const RowView<T> X, const acc_t<T>* w, acc_t<T> total, T* out) {
#ifdef CK_AVX512
  const bool wide = has_avx512();
#endif
  parallel_for(X.d, kBlock, [&](int64_t begin, int64_t end) {
#ifdef CK_AVX512
    if (wide) return mean_block_avx512(X, w, total, out, begin, end);
#endif
    mean_block_portable(X, w, total, out, begin, end);
  });
}

}  // namespace

void mean(const Rows& X, const std::vector<double>& weights, const Array& out, Stream) {
  check_mean_args(X, weights, out);
  dispatch_float(X.dtype, "X", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    std::vector<A> w(size_t(X.n), A(1));
    A total = A(X.n);
    if (!weights.empty()) {
      total = A(0);
      for (size_t i = 0; i < w.size(); ++i) total += (w[i] = A(weights[i]));
      check(total > 0 && std::isfinite(double(total)), "weights: their sum is not a positive finite number in the accumulation type");
    }
    mean_blocks<T>(host_view<T>(X), w.data(), total, static_cast<T*>(out.data));
  });
}

}  // namespace ck::CK_BACKEND
