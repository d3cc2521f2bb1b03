// Building the compressed views of a graph's edge list: a stable counting sort of the edges by a key
// (dst for the CSR by destination, src for the CSC by source).
//
// Inputs: keys (E,) and values (E,), int32 or int64, every entry in [0, num_nodes). Outputs: indptr
// (num_nodes + 1,) int64, sorted_values (E,) of the values' dtype and eid (E,) int64 with
//   eid[indptr[k] : indptr[k+1]] = the edge ids e with keys[e] == k, ascending,
//   sorted_values[s] = values[eid[s]].
// The result is unique (a stable sort), so it does not depend on the thread count or the device.
#pragma once

#include <string>

#include "../common/array.h"
#include "../common/stream.h"

namespace ck::CK_BACKEND {

// Raises ValueError naming keys_name / values_name when an entry lies outside [0, num_nodes).
void csr_build(const Array& keys, const Array& values, int64_t num_nodes, const Array& indptr,
               const Array& sorted_values, const Array& eid, const std::string& keys_name,
               const std::string& values_name, Stream stream);

}  // namespace ck::CK_BACKEND

namespace ck::graph {

inline void check_csr_args(const Array& keys, const Array& values, int64_t num_nodes, const Array& indptr,
                           const Array& sorted_values, const Array& eid) {
  check(num_nodes >= 0, "num_nodes: expected >= 0, got " + std::to_string(num_nodes));
  if (keys.dtype != DType::int32 && keys.dtype != DType::int64) throw TypeError("keys: expected int32 or int64");
  if (values.dtype != keys.dtype) throw TypeError("values: expected the dtype of keys");
  if (sorted_values.dtype != values.dtype) throw TypeError("sorted_values: expected the dtype of values");
  if (indptr.dtype != DType::int64) throw TypeError("indptr: expected int64");
  if (eid.dtype != DType::int64) throw TypeError("eid: expected int64");
  check(values.size == keys.size, "values: expected as many entries as keys");
  check(sorted_values.size == keys.size && eid.size == keys.size,
        "sorted_values, eid: expected as many entries as keys");
  check(indptr.size == num_nodes + 1, "indptr: expected num_nodes + 1 entries");
}

}  // namespace ck::graph
