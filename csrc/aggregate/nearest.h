// Bulyan's second stage for any beta: per coordinate, the mean of the beta values (of the theta selected
// workers) nearest their median. commkernels.aggregate uses the coordinate-wise kernel of coord.h
// (meamed's window) where it applies (theta < 2 beta); this one covers beta <= theta / 2, which Bulyan's
// usual sizes need (theta = n - 2f, beta = theta - 2f).
//
// Per coordinate: the theta values in ascending order (NaN the largest, as coord.h orders them), the
// median (even theta: the mean of the two middle values, in acc_t), then the window grows from the
// median's position one value at a time toward the nearer side (|x - median| in acc_t; a tie takes the
// larger value, as coord.h). The window's values are summed in ascending order in acc_t.
#pragma once

#include <cstdint>
#include <string>

#include "../common/array.h"
#include "../common/half.h"
#include "../common/stream.h"
#include "rows.h"

namespace ck {

template <class A>
CK_HD bool nearest_less(A a, A b) {  // ascending, NaN last
  const bool na = a != a, nb = b != b;
  if (na || nb) return !na && nb;
  return a < b;
}

// v[0, theta) in ascending order already; returns the mean of the beta values nearest their median.
template <class A>
CK_HD A nearest_median_mean_sorted(const A* v, int theta, int beta) {
  const A med = (theta % 2) ? v[theta / 2] : (v[theta / 2 - 1] + v[theta / 2]) / A(2);
  int lo = theta / 2, hi = theta / 2;  // the window is v[lo, hi)
  for (int taken = 0; taken < beta; ++taken) {
    if (lo == 0) { ++hi; continue; }
    if (hi == theta) { --lo; continue; }
    const A dl = med - v[lo - 1], dr = v[hi] - med;
    const bool right_nan = dr != dr, left_nan = dl != dl;
    if (right_nan && !left_nan) { --lo; continue; }
    if (left_nan && !right_nan) { ++hi; continue; }
    if (dr <= dl) ++hi; else --lo;  // a tie takes the larger value
  }
  A sum = A(0);
  for (int i = lo; i < hi; ++i) sum += v[i];
  return sum / A(beta);
}

// Insertion sort: theta is small (at most a few hundred).
template <class A>
CK_HD void nearest_sort(A* v, int theta) {
  for (int i = 1; i < theta; ++i) {
    const A x = v[i];
    int j = i - 1;
    while (j >= 0 && nearest_less(x, v[j])) {
      v[j + 1] = v[j];
      --j;
    }
    v[j + 1] = x;
  }
}

inline void check_nearest_args(const Rows& rows, int64_t beta, const Array& out) {
  check(beta >= 1 && beta <= rows.n, "beta: expected 1 <= beta <= " + std::to_string(rows.n) + ", got " +
                                         std::to_string(beta));
  check(rows.n <= 1024, "X: at most 1024 selected workers, got " + std::to_string(rows.n));
  if (out.dtype != rows.dtype)
    throw TypeError(std::string("out: expected dtype ") + dtype_name(rows.dtype) + " like X, got " +
                    dtype_name(out.dtype));
  check(out.size == rows.d, "out: expected " + std::to_string(rows.d) + " elements, got " + std::to_string(out.size));
}

namespace CK_BACKEND {

// out[j] <- the mean of the beta values of column j nearest the column's median (see above).
void nearest_median_mean(const Rows& rows, int64_t beta, const Array& out, Stream stream);

}  // namespace CK_BACKEND
}  // namespace ck
