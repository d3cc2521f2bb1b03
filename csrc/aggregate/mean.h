// The (weighted) mean of the n updates: out = sum_i w_i x_i / sum_i w_i, coordinate by coordinate.
//
// Accumulated in acc_t<T> (float; double for double), worker by worker in index order for every
// coordinate, so the result does not depend on the thread count or the backend's parallel structure.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "../common/stream.h"
#include "rows.h"

namespace ck {

// weights: empty (all ones) or n finite values >= 0 with a positive sum (checked).
inline void check_mean_args(const Rows& X, const std::vector<double>& weights, const Array& out) {
  check(out.size == X.d, "out: expected " + std::to_string(X.d) + " elements, got " + std::to_string(out.size));
  if (out.dtype != X.dtype)
    throw TypeError(std::string("out: expected dtype ") + dtype_name(X.dtype) + ", got " + dtype_name(out.dtype));
  if (weights.empty()) return;
  check(int64_t(weights.size()) == X.n, "weights: expected " + std::to_string(X.n) + " weights (one per update), got " +
                                            std::to_string(weights.size()));
  double total = 0;
  for (double w : weights) {
    check(std::isfinite(w) && w >= 0, "weights: expected finite values >= 0");
    total += w;
  }
  check(total > 0, "weights: expected a positive sum");
}

namespace CK_BACKEND {

void mean(const Rows& X, const std::vector<double>& weights, const Array& out, Stream stream);

}  // namespace CK_BACKEND
}  // namespace ck
