// Sparse aggregation: the sum (or mean) of many workers' SparseMsgs as one dense array, with argument
// checks and typed dispatch shared by the CPU and CUDA launches.
//
// Deterministic without atomics: every output element is owned by one thread (CPU) or one tile (CUDA),
// which adds the messages' values into it in message order, in acc_t<T>. Within a message the indices
// are strictly ascending (checked), so each message contributes at most once per element.
#pragma once

#include <string>
#include <vector>

#include "../common/array.h"
#include "../common/stream.h"

namespace ck {

// Calls f(TypeTag<T>{}, TypeTag<Index>{}) after checking that the messages agree: one dtype for every
// values array (and for out), one index dtype (int32 or int64), equal lengths, out of `size` elements.
template <class F>
void with_sparse_aggregate_args(const std::vector<Array>& values, const std::vector<Array>& indices, int64_t size,
                                const Array& out, F&& f) {
  check(!values.empty(), "msgs: expected at least one message");
  check(values.size() == indices.size(), "msgs: " + std::to_string(values.size()) + " values arrays but " +
                                             std::to_string(indices.size()) + " indices arrays");
  check(size >= 0, "size: expected >= 0, got " + std::to_string(size));
  check_size_fits_int32(size, "size");
  check(out.size == size, "out: expected " + std::to_string(size) + " elements, got " + std::to_string(out.size));
  for (size_t m = 0; m < values.size(); ++m) {
    const std::string name = "msgs[" + std::to_string(m) + "]";
    if (values[m].dtype != values[0].dtype)
      throw TypeError(name + ".values: expected " + dtype_name(values[0].dtype) + " like msgs[0], got " +
                      dtype_name(values[m].dtype));
    if (indices[m].dtype != indices[0].dtype)
      throw TypeError(name + ".indices: expected " + dtype_name(indices[0].dtype) + " like msgs[0], got " +
                      dtype_name(indices[m].dtype));
    check(values[m].size == indices[m].size, name + ": " + std::to_string(values[m].size) + " values but " +
                                                 std::to_string(indices[m].size) + " indices");
    check(indices[m].size <= size, name + ": more entries than size");
  }
  if (out.dtype != values[0].dtype)
    throw TypeError(std::string("out: expected ") + dtype_name(values[0].dtype) + ", got " + dtype_name(out.dtype));
  dispatch_float(values[0].dtype, "msgs[0].values", [&](auto vtag) {
    if (indices[0].dtype == DType::int32) return f(vtag, TypeTag<int32_t>{});
    if (indices[0].dtype == DType::int64) return f(vtag, TypeTag<int64_t>{});
    throw TypeError(std::string("msgs[0].indices: expected int32 or int64, got ") + dtype_name(indices[0].dtype));
  });
}

inline std::string bad_indices_message(int64_t m, int64_t size) {
  return "msgs[" + std::to_string(m) + "].indices: expected strictly ascending indices in [0, " +
         std::to_string(size) + ")";
}

namespace CK_BACKEND {

// out <- sum over m of decompress(values[m], indices[m], size), divided by the number of messages if
// `average`; accumulated in acc_t, message by message in list order for every element.
void sparse_aggregate(const std::vector<Array>& values, const std::vector<Array>& indices, int64_t size,
                      bool average, const Array& out, Stream stream);

}  // namespace CK_BACKEND
}  // namespace ck
