// The n workers' updates as a view of n row pointers: the input layer of every commkernels.aggregate kernel.
//
// Design (shared by all aggregation kernels; csrc/aggregate/rows_cuda.cuh adds the device side):
//
//   Python (commkernels/aggregate/_inputs.py) accepts X as an (n, *shape) array or a list/tuple of n arrays
//   of one shape, and passes the kernels `parts`, a list of arrays, and `n`:
//     - stacked input:  parts = [X]            (one array of n * d elements: n rows of d, row-major)
//     - list input:     parts = [X_0 .. X_n-1] (each a contiguous array of d elements, anywhere in memory)
//   For n = 1 both read the same. Nothing is stacked into a copy: make_rows() below turns parts into
//   `Rows`, n host-side row pointers (plus the base pointer when stacked). A subset or reordering of the
//   workers (e.g. Krum's selection for Bulyan) is just another list of parts, still without a copy.
//
//   Kernels read rows through RowView<T> (host + device): row(i) is table[i] when a pointer table is
//   given, else base + i * d. The CPU kernels point `table` at Rows::ptr (host memory). The CUDA launches
//   (rows_cuda.cuh, DeviceRows) use base + i * d for a stacked input (no table at all) and otherwise copy
//   the n pointers into a small stream-ordered device buffer (n * 8 bytes, one cudaMemcpyAsync from
//   pageable memory: the call returns once the table is staged, so the host vector may go away).
//
//   Contract checked here (the Python layer checks the same, with the user's argument names, first):
//   n >= 1; every part the same dtype (a float dtype); list parts all with d elements; a stacked part has
//   a multiple of n elements. Devices are checked in Python (all parts on one device).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../common/array.h"
#include "../common/hostdevice.h"

namespace ck {

struct Rows {
  std::vector<const void*> ptr;  // n row pointers, host memory (they point at device memory on CUDA)
  const void* base = nullptr;    // stacked input: row i starts at base + i * d elements; nullptr for a list
  int64_t n = 0;                 // number of workers
  int64_t d = 0;                 // elements per update
  DType dtype = DType::float32;

  bool stacked() const { return base != nullptr; }
};

inline std::string rows_name(const char* name, size_t i) { return std::string(name) + "[" + std::to_string(i) + "]"; }

// parts (see the top of this file) -> Rows; ValueError/TypeError naming `name` (the user's argument, "X").
inline Rows make_rows(const std::vector<Array>& parts, int64_t n, const char* name) {
  check(n >= 1, std::string(name) + ": expected at least one update, got none");
  check(!parts.empty(), std::string(name) + ": expected at least one array");
  Rows rows;
  rows.n = n;
  rows.dtype = parts[0].dtype;
  dispatch_float(rows.dtype, name, [](auto) {});  // a float dtype, or TypeError
  for (size_t i = 0; i < parts.size(); ++i)
    if (parts[i].dtype != rows.dtype)
      throw TypeError(rows_name(name, i) + ": expected dtype " + dtype_name(rows.dtype) + " like " +
                      rows_name(name, 0) + ", got " + dtype_name(parts[i].dtype));
  rows.ptr.resize(size_t(n));
  if (int64_t(parts.size()) == n) {
    rows.d = parts[0].size;
    for (size_t i = 0; i < parts.size(); ++i) {
      check(parts[i].size == rows.d, rows_name(name, i) + ": expected " + std::to_string(rows.d) + " elements like " +
                                         rows_name(name, 0) + ", got " + std::to_string(parts[i].size));
      rows.ptr[i] = parts[i].data;
    }
    return rows;
  }
  check(parts.size() == 1, std::string(name) + ": expected one stacked array or " + std::to_string(n) +
                               " arrays, got " + std::to_string(parts.size()));
  check(parts[0].size % n == 0, std::string(name) + ": a stacked array of " + std::to_string(parts[0].size) +
                                    " elements does not hold " + std::to_string(n) + " equal rows");
  rows.d = parts[0].size / n;
  rows.base = parts[0].data;
  const size_t bytes = dispatch_float(rows.dtype, name, [](auto tag) { return sizeof(typename decltype(tag)::type); });
  for (int64_t i = 0; i < n; ++i)
    rows.ptr[size_t(i)] = static_cast<const char*>(rows.base) + size_t(i) * size_t(rows.d) * bytes;
  return rows;
}

// How a kernel reads row i (host and device code): table[i], or base + i * d when table is null.
template <class T>
struct RowView {
  const T* const* table = nullptr;
  const T* base = nullptr;
  int64_t n = 0;
  int64_t d = 0;

  CK_HD const T* row(int64_t i) const { return table ? table[i] : base + i * d; }
};

// The host view: the pointer table of `rows` (valid while rows lives).
template <class T>
RowView<T> host_view(const Rows& rows) {
  return RowView<T>{reinterpret_cast<const T* const*>(rows.ptr.data()), nullptr, rows.n, rows.d};
}

}  // namespace ck
