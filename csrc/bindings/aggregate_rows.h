// Binding side of csrc/aggregate/rows.h: a rule's `X` argument arrives as (parts, n) — a list of arrays
// (one stacked (n, d) array, or the n rows) and the number of workers — and becomes a ck::Rows.
// Every aggregation binding file includes this; the arrays stay alive for the call (nanobind holds them).
#pragma once

#include <nanobind/stl/vector.h>

#include <vector>

#include "../aggregate/rows.h"
#include "ndarray.h"

namespace ck::bindings {

inline Rows rows_from(const std::vector<In>& parts, int64_t n, const char* name = "X") {
  std::vector<Array> arrays;
  arrays.reserve(parts.size());
  for (const In& a : parts) arrays.push_back(as_array(a, name));
  return make_rows(arrays, n, name);
}

}  // namespace ck::bindings
