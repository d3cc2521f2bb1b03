// The device side of Rows (rows.h): a RowView<T> whose pointers the GPU can read.
//
// A stacked input needs no table (row i = base + i * d) and allocates nothing: a small call costs little
// more than its kernels. A list input's n row pointers go into a small stream-ordered device buffer
// (n * 8 bytes), copied with one cudaMemcpyAsync from the host vector; a copy from pageable host memory
// returns once the source is staged, so Rows may be destroyed afterwards, and the buffer is freed in stream
// order after the kernels that read it.
#pragma once

#include <optional>

#include "../common/cuda_utils.cuh"
#include "rows.h"

namespace ck {

class DeviceRows {
 public:
  DeviceRows(const Rows& rows, cudaStream_t stream)
      : base_(rows.base), n_(rows.n), d_(rows.d) {
    if (rows.stacked()) return;
    table_.emplace(size_t(rows.n), stream);
    CK_CUDA_CHECK(cudaMemcpyAsync(table_->get(), rows.ptr.data(), size_t(rows.n) * sizeof(const void*),
                                  cudaMemcpyHostToDevice, stream));
  }

  template <class T>
  RowView<T> view() const {
    if (base_) return RowView<T>{nullptr, static_cast<const T*>(base_), n_, d_};
    return RowView<T>{reinterpret_cast<const T* const*>(table_->get()), nullptr, n_, d_};
  }

 private:
  const void* base_;
  int64_t n_, d_;
  std::optional<DeviceBuffer<const void*>> table_;  // list inputs only
};

}  // namespace ck
