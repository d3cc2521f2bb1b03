// Asynchronous and decentralized averaging (FedBuff buffer, FedAsync mixing, variance-corrected averaging
// of "Vanishing Variance", Tian et al. 2024) and the honest-set column moments the attacks and the
// robustness score use. Host+device math, argument checks and the task decomposition shared by the CPU
// and CUDA launches.
//
// Determinism: every reduction runs over fixed tasks (a segment cut into chunks of kVcmChunk elements, or
// column chunks of kMomentChunk), each reduced serially in a fixed order, and the tasks' partial results
// are merged in task order; nothing depends on the thread count or on scheduling.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../common/array.h"
#include "../common/half.h"
#include "../common/stream.h"
#include "rows.h"

namespace ck {

// ---- elementwise ------------------------------------------------------------------------------------

// buffer + weight * update, in acc_t of the buffer (float32 for float32/16-bit buffers, float64 for float64).
template <class B, class U>
CK_HD B buffer_axpy(B buffer, U update, acc_t<B> weight) {
  return from_acc<B>(acc_t<B>(to_acc(buffer)) + weight * acc_t<B>(to_acc(update)));
}

// (1 - alpha) x + alpha x_new; exact at alpha = 0 (x) and alpha = 1 (x_new) for finite inputs.
template <class X, class U>
CK_HD X mix(X x, U x_new, acc_t<X> alpha) {
  return from_acc<X>((acc_t<X>(1) - alpha) * acc_t<X>(to_acc(x)) + alpha * acc_t<X>(to_acc(x_new)));
}

// Checks an in-place pair (target updated from source): same size; target float32 or source's dtype.
// Calls f(target, source) with typed pointers.
template <class F>
void with_inplace_pair(const Array& target, const Array& source, const char* tname, const char* sname, F&& f) {
  check(target.size == source.size, std::string(sname) + ": expected " + std::to_string(target.size) +
                                        " elements like " + tname + ", got " + std::to_string(source.size));
  dispatch_float(source.dtype, sname, [&](auto stag) {
    using S = typename decltype(stag)::type;
    if (target.dtype == source.dtype) return f(static_cast<S*>(target.data), static_cast<const S*>(source.data));
    if constexpr (sizeof(S) == 2) {
      if (target.dtype == DType::float32)
        return f(static_cast<float*>(target.data), static_cast<const S*>(source.data));
    }
    throw TypeError(std::string(tname) + ": expected float32 or " + sname + "'s dtype (" +
                    dtype_name(source.dtype) + "), got " + dtype_name(target.dtype));
  });
}

// ---- running (count, mean, M2) statistics -------------------------------------------------------------

struct Moments {
  double count = 0, mean = 0, m2 = 0;
};

// Chan, Golub, LeVeque: merges b into a.
CK_HD void merge_moments(Moments& a, double count, double mean, double m2) {
  if (count == 0) return;
  if (a.count == 0) {
    a = Moments{count, mean, m2};
    return;
  }
  const double n = a.count + count, delta = mean - a.mean;
  a.mean += delta * (count / n);
  a.m2 += m2 + delta * delta * (a.count * count / n);
  a.count = n;
}

// ---- variance-corrected mean --------------------------------------------------------------------------

constexpr int64_t kVcmChunk = 4096;  // elements per task (the mixed chunk stays in L1 / shared memory)

struct VcmTask {
  int64_t segment, begin, end;
};

// The tasks: each segment cut into chunks of at most kVcmChunk elements, in order; first[s] is segment s's
// first task (first has segments + 1 entries). Offsets of the segments are their prefix sums.
inline void vcm_tasks(const std::vector<int64_t>& lengths, std::vector<VcmTask>& tasks, std::vector<int64_t>& first) {
  tasks.clear();
  first.assign(lengths.size() + 1, 0);
  int64_t offset = 0;
  for (size_t s = 0; s < lengths.size(); ++s) {
    first[s] = int64_t(tasks.size());
    for (int64_t b = 0; b < lengths[s]; b += kVcmChunk)
      tasks.push_back(VcmTask{int64_t(s), offset + b, offset + std::min(lengths[s], b + kVcmChunk)});
    offset += lengths[s];
  }
  first[lengths.size()] = int64_t(tasks.size());
}

// The rescaling of a segment from the merged moments: rows 0..n-1 (the inputs) then row n (the mixture m).
// target = sum_i w_i var_i, var = m's variance (both ddof = 1); scale = sqrt((target + eps) / (var + eps)).
// A segment of fewer than two elements has no variance: it is left as the weighted mean (returns false).
CK_HD bool vcm_scale(const Moments* rows, const double* weights, int64_t n, double eps, double* mu, double* scale) {
  const Moments& m = rows[n];
  *mu = m.mean;
  *scale = 1.0;
  if (m.count < 2) return false;
  double target = 0;
  for (int64_t i = 0; i < n; ++i) target += weights[i] * (rows[i].m2 / (rows[i].count - 1));
  *scale = sqrt((target + eps) / (m.m2 / (m.count - 1) + eps));
  return true;
}

template <class T>
CK_HD T vcm_rescale(T m, acc_t<T> mu, acc_t<T> scale) {
  return from_acc<T>((acc_t<T>(to_acc(m)) - mu) * scale + mu);
}

// Checks variance_corrected_mean's arguments (the rows are checked by make_rows): lengths >= 0 summing to d,
// n weights, out of d elements of the rows' dtype. Calls f(TypeTag<T>{}).
template <class F>
void with_vcm_args(const Rows& rows, const std::vector<int64_t>& lengths, const std::vector<double>& weights,
                   double eps, const Array& out, F&& f) {
  check(int64_t(weights.size()) == rows.n, "weights: expected " + std::to_string(rows.n) + ", got " +
                                               std::to_string(weights.size()));
  check(eps >= 0, "eps: expected >= 0");
  int64_t total = 0;
  for (size_t s = 0; s < lengths.size(); ++s) {
    check(lengths[s] >= 0, "segments: expected lengths >= 0, got " + std::to_string(lengths[s]));
    total += lengths[s];
  }
  check(total == rows.d, "segments: the lengths sum to " + std::to_string(total) + ", expected the update size " +
                             std::to_string(rows.d));
  if (out.dtype != rows.dtype)
    throw TypeError(std::string("out: expected ") + dtype_name(rows.dtype) + ", got " + dtype_name(out.dtype));
  check(out.size == rows.d, "out: expected " + std::to_string(rows.d) + " elements");
  dispatch_float(rows.dtype, "X", [&](auto tag) { f(tag); });
}

// ---- honest-set column moments --------------------------------------------------------------------------

constexpr int64_t kMomentChunk = 1024;  // columns per task (h rows of it stay in L2 for the second pass)

// Checks column_moments's arguments (the rows are checked by make_rows): center, mean_out, std_out empty
// or of d elements (mean_out/std_out of the rows' dtype); totals float64 of 2 elements.
// Calls f(TypeTag<T>{}, TypeTag<C>{}) (C: center's type; T when there is no center).
template <class F>
void with_moment_args(const Rows& rows, const Array& center, const Array& mean_out, const Array& std_out,
                      const Array& totals, F&& f) {
  const int64_t d = rows.d;
  check(center.size == 0 || center.size == d, "F: expected " + std::to_string(d) + " elements like an update");
  for (const Array* o : {&mean_out, &std_out}) {
    check(o->size == 0 || o->size == d, "out: expected " + std::to_string(d) + " elements");
    if (o->size && o->dtype != rows.dtype) throw TypeError("out: expected the updates' dtype");
  }
  check(totals.size == 2, "totals: expected 2 elements");
  (void)totals.as<double>("totals");
  dispatch_float(rows.dtype, "X", [&](auto tag) {
    if (center.size == 0) return f(tag, tag);
    dispatch_float(center.dtype, "F", [&](auto ctag) { f(tag, ctag); });
  });
}

}  // namespace ck

namespace ck::CK_BACKEND {

// buffer <- buffer + weight * update (buffer float32 or update's dtype).
void buffer_add(const Array& buffer, const Array& update, double weight, Stream stream);

// x <- (1 - alpha) x + alpha x_new (x float32 or x_new's dtype).
void fedasync_mix(const Array& x, const Array& x_new, double alpha, Stream stream);

// out <- per segment s: m = sum_i w_i x_i, rescaled to (m - mean(m_s)) * scale_s + mean(m_s) (vcm_scale).
void variance_corrected_mean(const Rows& rows, const std::vector<int64_t>& lengths,
                             const std::vector<double>& weights, double eps, const Array& out, Stream stream);

// Coordinate-wise over the rows: mean_j, std_j (ddof = 1; NaN for one row) into mean_out / std_out when
// they are not empty; totals <- [sum_j var_j, sum_j (center_j - mean_j)^2] (the second 0 without center).
void column_moments(const Rows& rows, const Array& center, const Array& mean_out,
                    const Array& std_out, const Array& totals, Stream stream);

}  // namespace ck::CK_BACKEND
