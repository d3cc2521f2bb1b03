// The weighted mean on the CPU: coordinate blocks of kBlock in parallel; inside a block, each worker's
// slice is read once (contiguously) and added into a stack accumulator, worker 0 first.
#include "../common/parallel.h"
#include "mean.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int64_t kBlock = 2048;

template <class T>
void mean_blocks(const RowView<T> X, const acc_t<T>* w, acc_t<T> total, T* out) {
  using A = acc_t<T>;
  parallel_for(X.d, kBlock, [&](int64_t begin, int64_t end) {
    A acc[kBlock];
    const int64_t len = end - begin;
    const T* x0 = X.row(0) + begin;
    for (int64_t j = 0; j < len; ++j) acc[j] = w[0] * to_acc(x0[j]);
    for (int64_t i = 1; i < X.n; ++i) {
      const T* xi = X.row(i) + begin;
      const A wi = w[i];
      for (int64_t j = 0; j < len; ++j) acc[j] += wi * to_acc(xi[j]);
    }
    for (int64_t j = 0; j < len; ++j) out[begin + j] = from_acc<T>(acc[j] / total);
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
