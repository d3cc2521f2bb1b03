// Asynchronous averaging and honest-set moments on the CPU (OpenMP). Every kernel is one pass over its
// inputs; the variance-corrected mean adds one pass over its d-element output (the rescaling needs the
// whole segment's statistics first). Reductions run over fixed tasks whose partial results are merged in
// task order, so the results do not depend on the thread count.
#include <cmath>
#include <vector>

#include "../common/parallel.h"
#include "async.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int kLanes = 16;
// Below this many elements read, a call runs on one thread: waking a team costs more than the work (and
// far more on a busy machine, where a descheduled sibling stalls the team's barrier).
constexpr int64_t kParallelWork = int64_t(1) << 18;

// parallel_for over `count` independent tasks, or serially when the whole call reads fewer than
// kParallelWork elements. The tasks are the same either way: results do not depend on it.
template <class F>
void run_tasks(int64_t count, int64_t work, F&& f) {
  if (work < kParallelWork) {
    if (count > 0) f(int64_t(0), count);
    return;
  }
  parallel_for(count, 1, f);
}  // independent partial sums: lets the compiler vectorise the reductions

template <class A>
A combine_lanes(A* acc) {
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int k = 0; k < w; ++k) acc[k] += acc[k + w];
  return acc[0];
}

// Sum of p[0..L), and m[j] = (First ? 0 : m[j]) + w * p[j], in one sweep.
template <bool First, class T, class A>
A sum_and_axpy(const T* __restrict__ p, int64_t L, A w, A* __restrict__ m) {
  A acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= L; j += kLanes)
    for (int k = 0; k < kLanes; ++k) {
      const A v = A(to_acc(p[j + k]));
      acc[k] += v;
      m[j + k] = (First ? A(0) : m[j + k]) + w * v;
    }
  for (int k = 0; j < L; ++j, ++k) {
    const A v = A(to_acc(p[j]));
    acc[k] += v;
    m[j] = (First ? A(0) : m[j]) + w * v;
  }
  return combine_lanes(acc);
}

// Sum of squared deviations of p[0..L) from mean.
template <class T, class A>
A squared_deviations(const T* __restrict__ p, int64_t L, A mean) {
  A acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= L; j += kLanes)
    for (int k = 0; k < kLanes; ++k) {
      const A v = A(to_acc(p[j + k])) - mean;
      acc[k] += v * v;
    }
  for (int k = 0; j < L; ++j, ++k) {
    const A v = A(to_acc(p[j])) - mean;
    acc[k] += v * v;
  }
  return combine_lanes(acc);
}

template <class A>
A plain_sum(const A* __restrict__ p, int64_t L) {
  A acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= L; j += kLanes)
    for (int k = 0; k < kLanes; ++k) acc[k] += p[j + k];
  for (int k = 0; j < L; ++j, ++k) acc[k] += p[j];
  return combine_lanes(acc);
}

template <class T>
void vcm(const Rows& rows, const std::vector<int64_t>& lengths, const std::vector<double>& weights, double eps,
         T* __restrict__ out) {
  using A = acc_t<T>;
  const int64_t n = rows.n;
  const RowView<T> x = host_view<T>(rows);
  std::vector<VcmTask> tasks;
  std::vector<int64_t> first;
  vcm_tasks(lengths, tasks, first);
  const int64_t nt = int64_t(tasks.size()), segments = int64_t(lengths.size());
  // per task and row (the n inputs, then the mixture): the chunk's mean and sum of squared deviations
  std::vector<double> stats(size_t(nt * (n + 1) * 2));
  const int64_t work = (n + 1) * rows.d;
  run_tasks(nt, work, [&](int64_t tb, int64_t te) {
    alignas(64) A m[kVcmChunk];
    for (int64_t t = tb; t < te; ++t) {
      const int64_t begin = tasks[t].begin, L = tasks[t].end - begin;
      double* st = stats.data() + t * (n + 1) * 2;
      for (int64_t i = 0; i < n; ++i) {
        const T* p = x.row(i) + begin;
        const A w = A(weights[i]);
        const A mean = (i == 0 ? sum_and_axpy<true>(p, L, w, m) : sum_and_axpy<false>(p, L, w, m)) / A(L);
        st[2 * i] = double(mean);
        st[2 * i + 1] = double(squared_deviations(p, L, mean));
      }
      const A mean = plain_sum(m, L) / A(L);
      st[2 * n] = double(mean);
      st[2 * n + 1] = double(squared_deviations(m, L, mean));
      for (int64_t j = 0; j < L; ++j) out[begin + j] = from_acc<T>(m[j]);
    }
  });
  std::vector<double> mu(static_cast<size_t>(segments)), scale(static_cast<size_t>(segments));
  std::vector<char> apply(static_cast<size_t>(segments));
  run_tasks(segments, nt * (n + 1) * 8, [&](int64_t sb, int64_t se) {
    std::vector<Moments> acc(size_t(n + 1));
    for (int64_t s = sb; s < se; ++s) {
      std::fill(acc.begin(), acc.end(), Moments{});
      for (int64_t t = first[s]; t < first[s + 1]; ++t) {
        const double L = double(tasks[t].end - tasks[t].begin);
        const double* st = stats.data() + t * (n + 1) * 2;
        for (int64_t i = 0; i <= n; ++i) merge_moments(acc[size_t(i)], L, st[2 * i], st[2 * i + 1]);
      }
      apply[size_t(s)] = vcm_scale(acc.data(), weights.data(), n, eps, &mu[size_t(s)], &scale[size_t(s)]);
    }
  });
  run_tasks(nt, rows.d, [&](int64_t tb, int64_t te) {
    for (int64_t t = tb; t < te; ++t) {
      const int64_t s = tasks[t].segment;
      if (!apply[size_t(s)]) continue;
      const A a_mu = A(mu[size_t(s)]), a_scale = A(scale[size_t(s)]);
      for (int64_t j = tasks[t].begin; j < tasks[t].end; ++j) out[j] = vcm_rescale(out[j], a_mu, a_scale);
    }
  });
}

template <class T, class C>
void moments(const Rows& rows, const C* center, T* mean_out, T* std_out, double* totals) {
  using A = acc_t<T>;
  const int64_t h = rows.n, d = rows.d;
  const RowView<T> x = host_view<T>(rows);
  const int64_t chunks = (d + kMomentChunk - 1) / kMomentChunk;
  std::vector<double> partial(size_t(2 * chunks));
  const A inv_h = A(1) / A(h), inv_h1 = A(1) / A(h - 1);  // h = 1: inf, and 0 * inf = NaN variances
  run_tasks(chunks, h * d, [&](int64_t cb, int64_t ce) {
    alignas(64) A sum[kMomentChunk];
    alignas(64) A m2[kMomentChunk];
    for (int64_t c = cb; c < ce; ++c) {
      const int64_t begin = c * kMomentChunk, L = std::min(kMomentChunk, d - begin);
      const T* p = x.row(0) + begin;
      for (int64_t j = 0; j < L; ++j) sum[j] = A(to_acc(p[j]));
      for (int64_t i = 1; i < h; ++i) {
        p = x.row(i) + begin;
        for (int64_t j = 0; j < L; ++j) sum[j] += A(to_acc(p[j]));
      }
      for (int64_t j = 0; j < L; ++j) {
        sum[j] *= inv_h;  // now the mean
        m2[j] = A(0);
      }
      for (int64_t i = 0; i < h; ++i) {
        p = x.row(i) + begin;
        for (int64_t j = 0; j < L; ++j) {
          const A v = A(to_acc(p[j])) - sum[j];
          m2[j] += v * v;
        }
      }
      double total_var = 0, total_dev = 0;
      for (int64_t j = 0; j < L; ++j) {
        const A var = m2[j] * inv_h1;
        m2[j] = var;
        total_var += double(var);
      }
      if (center)
        for (int64_t j = 0; j < L; ++j) {
          const double dev = double(to_acc(center[begin + j])) - double(sum[j]);
          total_dev += dev * dev;
        }
      if (mean_out)
        for (int64_t j = 0; j < L; ++j) mean_out[begin + j] = from_acc<T>(sum[j]);
      if (std_out)
        for (int64_t j = 0; j < L; ++j) std_out[begin + j] = from_acc<T>(A(std::sqrt(m2[j])));
      partial[size_t(2 * c)] = total_var;
      partial[size_t(2 * c + 1)] = total_dev;
    }
  });
  double tv = 0, td = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    tv += partial[size_t(2 * c)];
    td += partial[size_t(2 * c + 1)];
  }
  totals[0] = tv;
  totals[1] = td;
}

}  // namespace

void buffer_add(const Array& buffer, const Array& update, double weight, Stream) {
  with_inplace_pair(buffer, update, "buffer", "update", [&](auto* b, const auto* u) {
    using B = std::remove_pointer_t<decltype(b)>;
    const acc_t<B> w = acc_t<B>(weight);
    parallel_for(buffer.size, 1 << 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) b[i] = buffer_axpy(b[i], u[i], w);
    });
  });
}

void fedasync_mix(const Array& x, const Array& x_new, double alpha, Stream) {
  with_inplace_pair(x, x_new, "x", "x_new", [&](auto* p, const auto* q) {
    using X = std::remove_pointer_t<decltype(p)>;
    const acc_t<X> a = acc_t<X>(alpha);
    parallel_for(x.size, 1 << 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) p[i] = mix(p[i], q[i], a);
    });
  });
}

void variance_corrected_mean(const Rows& rows, const std::vector<int64_t>& lengths,
                             const std::vector<double>& weights, double eps, const Array& out, Stream) {
  with_vcm_args(rows, lengths, weights, eps, out, [&](auto tag) {
    using T = typename decltype(tag)::type;
    vcm<T>(rows, lengths, weights, eps, static_cast<T*>(out.data));
  });
}

void column_moments(const Rows& rows, const Array& center, const Array& mean_out,
                    const Array& std_out, const Array& totals, Stream) {
  with_moment_args(rows, center, mean_out, std_out, totals, [&](auto tag, auto ctag) {
    using T = typename decltype(tag)::type;
    using C = typename decltype(ctag)::type;
    moments<T, C>(rows, center.size ? static_cast<const C*>(center.data) : nullptr,
                  mean_out.size ? static_cast<T*>(mean_out.data) : nullptr,
                  std_out.size ? static_cast<T*>(std_out.data) : nullptr, static_cast<double*>(totals.data));
  });
}

}  // namespace ck::CK_BACKEND
