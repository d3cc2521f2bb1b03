// The weighted mean on the CPU: coordinate blocks of kBlock in parallel; inside a block, each worker's
// slice is read once (contiguously) and added into a stack accumulator, worker 0 first.
#include "../common/parallel.h"
#include "mean.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int64_t kBlock = 8192;

template <class T>
void mean_blocks(const RowView<T> X, const acc_t<T>* w, acc_t<T> total, T* out) {
  using A = acc_t<T>;
  parallel_for(X.d, kBlock, [&](int64_t begin, int64_t end) {
    A acc[kBlock];
    const int64_t len = end - begin;
    const T* x0 = X.row(0) + begin;
    for (int64_t j = 0; j < len; ++j) acc[j] = w[0] * to_acc(x0[j]);
    // Four workers per sweep: acc[j] stays in a register across them, so the accumulator is loaded and
    // stored once per four rows instead of once per row. The additions keep their order (worker 1, 2, 3,
    // ...), so the bits are those of the one-row loop.
    int64_t i = 1;
    for (; i + 4 <= X.n; i += 4) {
      const T *x1 = X.row(i) + begin, *x2 = X.row(i + 1) + begin, *x3 = X.row(i + 2) + begin,
              *x4 = X.row(i + 3) + begin;
      const A w1 = w[i], w2 = w[i + 1], w3 = w[i + 2], w4 = w[i + 3];
      for (int64_t j = 0; j < len; ++j) {
        A a = acc[j];
        a += w1 * to_acc(x1[j]);
        a += w2 * to_acc(x2[j]);
        a += w3 * to_acc(x3[j]);
        a += w4 * to_acc(x4[j]);
        acc[j] = a;
      }
    }
    for (; i < X.n; ++i) {
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
