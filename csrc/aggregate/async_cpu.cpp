// Asynchronous averaging and honest-set moments on the CPU (OpenMP). Every kernel is one pass over its
// inputs; the variance-corrected mean adds one pass over its d-element output (the rescaling needs the
// whole segment's statistics first). Reductions run over fixed tasks whose partial results are merged in
// task order, so the results do not depend on the thread count.
#include <cmath>
#include <vector>

#include "../common/cpu_features.h"
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

// The loops below are written once and compiled twice: for baseline x86-64 and, where the CPU has it, for
// AVX-512 (the *_avx512 wrappers; has_avx512() picks at run time). The helpers are forced inline so that
// each copy gets the wide code. The AVX-512 copy may contract a * b + c into an FMA: results can differ from
// the baseline copy's in the last bit, never from run to run or with the thread count.

template <class A>
CK_ALWAYS_INLINE A combine_lanes(A* acc) {
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int k = 0; k < w; ++k) acc[k] += acc[k + w];
  return acc[0];
}

// Sum of p[0..L), and m[j] = (First ? 0 : m[j]) + w * p[j], in one sweep.
template <bool First, class T, class A>
CK_ALWAYS_INLINE A sum_and_axpy(const T* __restrict__ p, int64_t L, A w, A* __restrict__ m) {
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
CK_ALWAYS_INLINE A squared_deviations(const T* __restrict__ p, int64_t L, A mean) {
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
CK_ALWAYS_INLINE A plain_sum(const A* __restrict__ p, int64_t L) {
  A acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= L; j += kLanes)
    for (int k = 0; k < kLanes; ++k) acc[k] += p[j + k];
  for (int k = 0; j < L; ++j, ++k) acc[k] += p[j];
  return combine_lanes(acc);
}

// The first pass of variance_corrected_mean over tasks [tb, te): per task and row, the chunk's mean and sum
// of squared deviations; the mixture m (L1-resident), its moments, and m written to out.
template <class T>
CK_ALWAYS_INLINE void vcm_task_range(const RowView<T>& x, const VcmTask* tasks, const double* weights,
                                     double* stats, T* __restrict__ out, int64_t tb, int64_t te) {
  using A = acc_t<T>;
  const int64_t n = x.n;
  alignas(64) A m[kVcmChunk];
  for (int64_t t = tb; t < te; ++t) {
    const int64_t begin = tasks[t].begin, L = tasks[t].end - begin;
    double* st = stats + t * (n + 1) * 2;
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
}

// The second pass: each segment's elements rescaled about its mean.
template <class T>
CK_ALWAYS_INLINE void vcm_rescale_range(const VcmTask* tasks, const char* apply, const double* mu,
                                        const double* scale, T* __restrict__ out, int64_t tb, int64_t te) {
  using A = acc_t<T>;
  for (int64_t t = tb; t < te; ++t) {
    const int64_t s = tasks[t].segment;
    if (!apply[s]) continue;
    const A a_mu = A(mu[s]), a_scale = A(scale[s]);
    for (int64_t j = tasks[t].begin; j < tasks[t].end; ++j) out[j] = vcm_rescale(out[j], a_mu, a_scale);
  }
}

template <class T>
void vcm_tasks_base(const RowView<T> x, const VcmTask* tasks, const double* weights, double* stats, T* out,
                    int64_t tb, int64_t te) {
  vcm_task_range<T>(x, tasks, weights, stats, out, tb, te);
}

template <class T>
void vcm_rescale_base(const VcmTask* tasks, const char* apply, const double* mu, const double* scale, T* out,
                      int64_t tb, int64_t te) {
  vcm_rescale_range<T>(tasks, apply, mu, scale, out, tb, te);
}

#ifdef CK_AVX512
template <class T>
CK_AVX512 void vcm_tasks_avx512(const RowView<T> x, const VcmTask* tasks, const double* weights, double* stats,
                                T* out, int64_t tb, int64_t te) {
  vcm_task_range<T>(x, tasks, weights, stats, out, tb, te);
}

template <class T>
CK_AVX512 void vcm_rescale_avx512(const VcmTask* tasks, const char* apply, const double* mu, const double* scale,
                                  T* out, int64_t tb, int64_t te) {
  vcm_rescale_range<T>(tasks, apply, mu, scale, out, tb, te);
}
#endif

template <class T>
void vcm(const Rows& rows, const std::vector<int64_t>& lengths, const std::vector<double>& weights, double eps,
         T* __restrict__ out) {
  const int64_t n = rows.n;
  const RowView<T> x = host_view<T>(rows);
  std::vector<VcmTask> tasks;
  std::vector<int64_t> first;
  vcm_tasks(lengths, tasks, first);
  const int64_t nt = int64_t(tasks.size()), segments = int64_t(lengths.size());
  // per task and row (the n inputs, then the mixture): the chunk's mean and sum of squared deviations
  std::vector<double> stats(size_t(nt * (n + 1) * 2));
  const int64_t work = (n + 1) * rows.d;
  const bool wide = has_avx512();
  run_tasks(nt, work, [&](int64_t tb, int64_t te) {
#ifdef CK_AVX512
    if (wide) return vcm_tasks_avx512<T>(x, tasks.data(), weights.data(), stats.data(), out, tb, te);
#endif
    vcm_tasks_base<T>(x, tasks.data(), weights.data(), stats.data(), out, tb, te);
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
#ifdef CK_AVX512
    if (wide) return vcm_rescale_avx512<T>(tasks.data(), apply.data(), mu.data(), scale.data(), out, tb, te);
#endif
    vcm_rescale_base<T>(tasks.data(), apply.data(), mu.data(), scale.data(), out, tb, te);
  });
  (void)wide;
}

// Column chunks [cb, ce) of column_moments: the h rows summed, then their squared deviations from the mean
// while the chunk is in cache; mean/std written; per chunk, sum_j var_j and sum_j (center_j - mean_j)^2.
template <class T, class C>
CK_ALWAYS_INLINE void moments_range(const RowView<T>& x, const C* center, T* mean_out, T* std_out,
                                    double* partial, int64_t cb, int64_t ce) {
  using A = acc_t<T>;
  const int64_t h = x.n, d = x.d;
  const A inv_h = A(1) / A(h), inv_h1 = A(1) / A(h - 1);  // h = 1: inf, and 0 * inf = NaN variances
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
    partial[2 * c] = total_var;
    partial[2 * c + 1] = total_dev;
  }
}

template <class T, class C>
void moments_base(const RowView<T> x, const C* center, T* mean_out, T* std_out, double* partial, int64_t cb,
                  int64_t ce) {
  moments_range<T, C>(x, center, mean_out, std_out, partial, cb, ce);
}

#ifdef CK_AVX512
template <class T, class C>
CK_AVX512 void moments_avx512(const RowView<T> x, const C* center, T* mean_out, T* std_out, double* partial,
                              int64_t cb, int64_t ce) {
  moments_range<T, C>(x, center, mean_out, std_out, partial, cb, ce);
}
#endif

template <class T, class C>
void moments(const Rows& rows, const C* center, T* mean_out, T* std_out, double* totals) {
  const int64_t h = rows.n, d = rows.d;
  const RowView<T> x = host_view<T>(rows);
  const int64_t chunks = (d + kMomentChunk - 1) / kMomentChunk;
  std::vector<double> partial(size_t(2 * chunks));
  const bool wide = has_avx512();
  run_tasks(chunks, h * d, [&](int64_t cb, int64_t ce) {
#ifdef CK_AVX512
    if (wide) return moments_avx512<T, C>(x, center, mean_out, std_out, partial.data(), cb, ce);
#endif
    moments_base<T, C>(x, center, mean_out, std_out, partial.data(), cb, ce);
  });
  (void)wide;
  double tv = 0, td = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    tv += partial[size_t(2 * c)];
    td += partial[size_t(2 * c + 1)];
  }
  totals[0] = tv;
  totals[1] = td;
}

template <class B, class U>
void axpy_base(B* __restrict__ b, const U* __restrict__ u, acc_t<B> w, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) b[i] = buffer_axpy(b[i], u[i], w);
}

template <class X, class U>
void mix_base(X* __restrict__ x, const U* __restrict__ u, acc_t<X> a, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) x[i] = mix(x[i], u[i], a);
}

#ifdef CK_AVX512
template <class B, class U>
CK_AVX512 void axpy_avx512(B* __restrict__ b, const U* __restrict__ u, acc_t<B> w, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) b[i] = buffer_axpy(b[i], u[i], w);
}

template <class X, class U>
CK_AVX512 void mix_avx512(X* __restrict__ x, const U* __restrict__ u, acc_t<X> a, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) x[i] = mix(x[i], u[i], a);
}
#endif

}  // namespace

void buffer_add(const Array& buffer, const Array& update, double weight, Stream) {
  with_inplace_pair(buffer, update, "buffer", "update", [&](auto* b, const auto* u) {
    using B = std::remove_pointer_t<decltype(b)>;
    const acc_t<B> w = acc_t<B>(weight);
    const bool wide = has_avx512();
    parallel_for(buffer.size, 1 << 16, [&](int64_t begin, int64_t end) {
#ifdef CK_AVX512
      if (wide) return axpy_avx512(b, u, w, begin, end);
#endif
      axpy_base(b, u, w, begin, end);
    });
    (void)wide;
  });
}

void fedasync_mix(const Array& x, const Array& x_new, double alpha, Stream) {
  with_inplace_pair(x, x_new, "x", "x_new", [&](auto* p, const auto* q) {
    using X = std::remove_pointer_t<decltype(p)>;
    const acc_t<X> a = acc_t<X>(alpha);
    const bool wide = has_avx512();
    parallel_for(x.size, 1 << 16, [&](int64_t begin, int64_t end) {
#ifdef CK_AVX512
      if (wide) return mix_avx512(p, q, a, begin, end);
#endif
      mix_base(p, q, a, begin, end);
    });
    (void)wide;
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
