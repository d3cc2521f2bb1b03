// MoE balancing kernels on the CPU. Reductions run over fixed row chunks (moe::row_chunks, a function of T
// alone) and are combined in chunk order, so results do not depend on the thread count.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")  // the same roundings as the GPU (balance.h)
#endif

#include <algorithm>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "../common/parallel.h"
#include "balance.h"
#include "balance_rows.h"
#include "small_work.h"

namespace ck::CK_BACKEND {
namespace {

template <class I>
void count_ids(const I* ids, int64_t begin, int64_t end, int64_t k, int64_t used, int64_t E, int64_t* counts,
               int64_t* bad) {
  for (int64_t t = begin; t < end; ++t)
    for (int64_t s = 0; s < used; ++s) {
      const int64_t id = int64_t(ids[t * k + s]);
      if (id < 0 || id >= E) {
        *bad = id;
        return;
      }
      ++counts[id];
    }
}

}  // namespace

void load_balancing_loss(const Array& probs, const Array& ids, int64_t T, int64_t E, int64_t k, bool first_only,
                         const Array& loss, const Array& fraction, Stream) {
  moe::check_matrix(probs, T, E, "probs");
  check(k >= 1 && ids.size == T * k, "ids: expected T * k elements with k >= 1");
  check(ids.dtype == DType::int32 || ids.dtype == DType::int64, "ids: expected dtype int32 or int64");
  moe::check_acc_array(loss, probs.dtype, 1, "loss");
  moe::check_acc_array(fraction, probs.dtype, E, "fraction");
  dispatch_float(probs.dtype, "probs", [&](auto tag) {
    using T_ = typename decltype(tag)::type;
    using A = acc_t<T_>;
    const T_* p = static_cast<const T_*>(probs.data);
    const int chunks = moe::row_chunks(T);
    const int64_t used = first_only ? 1 : k;
    std::vector<double> sums(size_t(chunks) * size_t(E), 0.0);
    std::vector<int64_t> counts(size_t(chunks) * size_t(E), 0);
    std::vector<int64_t> bad(size_t(chunks), 0);
    std::vector<char> has_bad(size_t(chunks), 0);
    moe::chunks_by_work(T, chunks, T * E, [&](int c, int64_t begin, int64_t end) {
      double* sum = sums.data() + size_t(c) * size_t(E);
      std::vector<A> block(size_t(E), A(0));  // A sums over up to 256 rows, then into the double sums
      for (int64_t b = begin; b < end; b += 256) {
        const int64_t stop = b + 256 < end ? b + 256 : end;
        for (int64_t t = b; t < stop; ++t) {
          const T_* row = p + t * E;
          for (int64_t j = 0; j < E; ++j) block[size_t(j)] += to_acc(row[j]);
        }
        for (int64_t j = 0; j < E; ++j) {
          sum[j] += double(block[size_t(j)]);
          block[size_t(j)] = A(0);
        }
      }
      int64_t* count = counts.data() + size_t(c) * size_t(E);
      int64_t b = 0;
      if (ids.dtype == DType::int32)
        count_ids(static_cast<const int32_t*>(ids.data), begin, end, k, used, E, count, &b);
      else
        count_ids(static_cast<const int64_t*>(ids.data), begin, end, k, used, E, count, &b);
      bad[size_t(c)] = b;
      has_bad[size_t(c)] = b < 0 || b >= E;
    });
    for (int c = 0; c < chunks; ++c)
      check(!has_bad[size_t(c)], "ids: expected expert ids in [0, " + std::to_string(E) + "), got " +
                                     std::to_string(bad[size_t(c)]));
    A* f = static_cast<A*>(fraction.data);
    double total = 0.0;
    for (int64_t j = 0; j < E; ++j) {
      double s = 0.0;
      int64_t n = 0;
      for (int c = 0; c < chunks; ++c) {
        s += sums[size_t(c) * size_t(E) + size_t(j)];
        n += counts[size_t(c) * size_t(E) + size_t(j)];
      }
      const double fj = T ? double(n) / double(T * used) : 0.0;
      f[j] = A(fj);
      total += fj * (T ? s / double(T) : 0.0);
    }
    static_cast<A*>(loss.data)[0] = A(double(E) * total);
  });
}

void z_loss(const Array& logits, int64_t T, int64_t E, const Array& loss, const Array& lse, Stream) {
  moe::check_matrix(logits, T, E, "logits");
  moe::check_acc_array(loss, logits.dtype, 1, "loss");
  moe::check_acc_array(lse, logits.dtype, T, "lse");
  dispatch_float(logits.dtype, "logits", [&](auto tag) {
    using T_ = typename decltype(tag)::type;
    using A = acc_t<T_>;
    const T_* x = static_cast<const T_*>(logits.data);
    A* out = static_cast<A*>(lse.data);
    // lse per row, parallel over rows whatever the chunks (a row's lse does not depend on its neighbours);
    // then the squares in the chunks' fixed order, as stats_rows sums them: the same bits, and a few
    // hundred rows of many experts no longer run on one thread.
    // an exponential per element: worth a second thread from a quarter of the plain passes' work
    moe::for_by_work(T, std::max<int64_t>(16, 16384 / E / 16 * 16), 4 * T * E, [&](int64_t begin, int64_t end) {
      moe::stats_rows(x, begin, end, E, static_cast<A*>(nullptr), static_cast<A*>(nullptr), out);
    });
    const int chunks = moe::row_chunks(T);
    double total = 0.0;
    for (int c = 0; c < chunks; ++c) {
      const int64_t begin = T / chunks * c + std::min<int64_t>(c, T % chunks);
      const int64_t end = T / chunks * (c + 1) + std::min<int64_t>(c + 1, T % chunks);
      double squares = 0.0;
      for (int64_t t = begin; t < end; ++t) squares += double(out[t]) * double(out[t]);
      total += squares;
    }
    static_cast<A*>(loss.data)[0] = A(T ? total / double(T) : 0.0);
  });
}

void z_loss_backward(const Array& logits, const Array& lse, const Array& grad, int64_t T, int64_t E,
                     const Array& grad_logits, Stream) {
  moe::check_matrix(logits, T, E, "logits");
  moe::check_acc_array(lse, logits.dtype, T, "lse");
  moe::check_acc_array(grad, logits.dtype, 1, "grad");
  check(grad_logits.dtype == logits.dtype && grad_logits.size == logits.size,
        "grad_logits: expected logits' dtype and size");
  dispatch_float(logits.dtype, "logits", [&](auto tag) {
    using T_ = typename decltype(tag)::type;
    using A = acc_t<T_>;
    const T_* x = static_cast<const T_*>(logits.data);
    const A* l = static_cast<const A*>(lse.data);
    T_* g = static_cast<T_*>(grad_logits.data);
    const A scale = T ? A(double(static_cast<const A*>(grad.data)[0]) * 2.0 / double(T)) : A(0);
    moe::for_by_work(T, 64, T * E, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const A lt = l[t], c = moe::fmul(scale, lt);
        const T_* row = x + t * E;
        T_* out = g + t * E;
        for (int64_t j = 0; j < E; ++j) out[j] = from_acc<T_>(moe::fmul(c, moe::exp_acc(moe::fsub(to_acc(row[j]), lt))));
      }
    });
  });
}

void update_expert_bias(const Array& bias, const Array& counts, int64_t E, double rate, Stream) {
  check(E >= 1 && bias.size % E == 0, "bias: expected a multiple of E elements");
  check(counts.size == bias.size, "counts: expected as many elements as bias");
  float* b = bias.as<float>("bias");
  const float r = float(rate);
  const int64_t rows = bias.size / E;
  auto run = [&](auto* c) {
    for (int64_t row = 0; row < rows; ++row) {
      const auto* cr = c + row * E;
      float* br = b + row * E;
      using C = std::remove_cv_t<std::remove_reference_t<decltype(*c)>>;
      using S = std::conditional_t<std::is_integral_v<C>, int64_t, double>;
      S sum = 0;
      for (int64_t j = 0; j < E; ++j) sum += S(cr[j]);
      for (int64_t j = 0; j < E; ++j) {
        const S d = sum - S(E) * S(cr[j]);  // the sign of mean - counts[j], without dividing
        const float sign = d > 0 ? 1.0f : (d < 0 ? -1.0f : (d == 0 ? 0.0f : std::numeric_limits<float>::quiet_NaN()));
        br[j] = br[j] + r * sign;
      }
    }
  };
  switch (counts.dtype) {
    case DType::int32: run(static_cast<const int32_t*>(counts.data)); break;
    case DType::int64: run(static_cast<const int64_t*>(counts.data)); break;
    case DType::float32: run(static_cast<const float*>(counts.data)); break;
    case DType::float64: run(static_cast<const double*>(counts.data)); break;
    default: throw TypeError("counts: expected dtype int32, int64, float32 or float64");
  }
}

}  // namespace ck::CK_BACKEND
