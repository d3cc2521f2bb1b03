// Host-side helpers for the CUDA launches: error checks, the caller's device and stream, scratch memory.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>

#include "stream.h"

namespace ck {

#define CK_CUDA_CHECK(expr)                                                                                \
  do {                                                                                                     \
    const cudaError_t ck_err_ = (expr);                                                                    \
    if (ck_err_ != cudaSuccess)                                                                            \
      throw std::runtime_error(std::string("commkernels: CUDA error ") + cudaGetErrorString(ck_err_) +    \
                               " in " #expr);                                                              \
  } while (0)

// Raises a clear error when this process sees no GPU (the module imports fine without one).
inline void require_gpu() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0)
    throw std::runtime_error(std::string("commkernels: no CUDA GPU is available (") +
                             (err != cudaSuccess ? cudaGetErrorString(err) : "no device") + ")");
}

// Makes the arrays' device current for the launch, and restores the caller's device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(const Stream& stream) {
    require_gpu();
    CK_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != stream.device) CK_CUDA_CHECK(cudaSetDevice(stream.device));
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

inline cudaStream_t cuda_stream(const Stream& stream) { return reinterpret_cast<cudaStream_t>(stream.handle); }

// commkernels' stream-ordered scratch pool on the current device, made on first use and kept for the
// process. Not the device's default pool: that one's release threshold is 0, so every synchronize (a
// caller's, or gram's own before it reads G back) unmaps its free memory and the next cudaMallocAsync maps
// it again, ~80-250 us measured per small call on an H100, more than the kernels. This pool keeps up to
// kKeepBytes of free scratch mapped across synchronizations (the caching allocators of torch and CuPy do
// the same for their memory); beyond that it gives memory back at the next synchronize. Set on our own
// pool, so the process's default pool and other libraries' allocations are left as they were.
inline cudaMemPool_t scratch_pool() {
  constexpr uint64_t kKeepBytes = uint64_t(256) << 20;
  constexpr int kMaxDevices = 64;
  static std::mutex mutex;
  static cudaMemPool_t pools[kMaxDevices] = {};
  int device = 0;
  CK_CUDA_CHECK(cudaGetDevice(&device));
  if (device < 0 || device >= kMaxDevices) throw std::runtime_error("commkernels: CUDA device index out of range");
  const std::lock_guard<std::mutex> lock(mutex);
  if (!pools[device]) {
    cudaMemPoolProps props = {};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    cudaMemPool_t pool = nullptr;
    CK_CUDA_CHECK(cudaMemPoolCreate(&pool, &props));
    uint64_t keep = kKeepBytes;
    CK_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    pools[device] = pool;
  }
  return pools[device];
}

// Stream-ordered scratch memory from scratch_pool(), released in stream order when it goes out of scope.
// Made while the arrays' device is current (after a DeviceGuard).
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer(size_t count, cudaStream_t stream) : stream_(stream) {
    CK_CUDA_CHECK(cudaMallocFromPoolAsync(reinterpret_cast<void**>(&data_), (count ? count : 1) * sizeof(T),
                                          scratch_pool(), stream));
  }
  ~DeviceBuffer() { cudaFreeAsync(data_, stream_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return data_; }

 private:
  T* data_ = nullptr;
  cudaStream_t stream_;
};

inline void check_launch() { CK_CUDA_CHECK(cudaGetLastError()); }

// Blocks for a grid-stride loop over n elements: enough to fill the GPU, never more than needed.
inline unsigned grid_for(int64_t n, int threads, unsigned max_blocks = 4096) {
  const int64_t blocks = (n + threads - 1) / threads;
  return unsigned(blocks < 1 ? 1 : (blocks > max_blocks ? max_blocks : blocks));
}

}  // namespace ck
