// Stable sort of the edges by key on the GPU: a validation pass (an integer flag), then CUB's radix sort
// of (key, edge id) pairs, which is stable and deterministic; indptr[k] is the lower bound of k in the
// sorted keys, and the values are gathered through the edge ids. The same result as the CPU.
#include <cub/device/device_radix_sort.cuh>

#include "../common/cuda_utils.cuh"
#include "csr.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int kThreads = 256;

template <class I>
__global__ void validate_kernel(const I* __restrict__ keys, const I* __restrict__ values, int64_t e, int64_t n,
                                int* __restrict__ flags) {
  int bk = 0, bv = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < e; i += int64_t(gridDim.x) * blockDim.x) {
    bk |= uint64_t(int64_t(keys[i])) >= uint64_t(n);
    bv |= uint64_t(int64_t(values[i])) >= uint64_t(n);
  }
  if (bk) atomicOr(flags, 1);  // an integer flag: the result does not depend on the order
  if (bv) atomicOr(flags, 2);
}

template <class I>
__global__ void iota_kernel(I* __restrict__ ids, int64_t e) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < e; i += int64_t(gridDim.x) * blockDim.x)
    ids[i] = I(i);
}

template <class I>
__global__ void indptr_kernel(const I* __restrict__ sorted_keys, int64_t e, int64_t n, int64_t* __restrict__ indptr) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k <= n; k += int64_t(gridDim.x) * blockDim.x) {
    int64_t lo = 0, hi = e;  // first slot with key >= k
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (int64_t(sorted_keys[mid]) < k) lo = mid + 1; else hi = mid;
    }
    indptr[k] = lo;
  }
}

template <class I>
__global__ void gather_kernel(const I* __restrict__ values, const int64_t* __restrict__ eid, int64_t e,
                              I* __restrict__ sorted) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < e; i += int64_t(gridDim.x) * blockDim.x)
    sorted[i] = values[eid[i]];
}

int key_bits(int64_t n) {
  int bits = 1;
  while (bits < 63 && (int64_t(1) << bits) < n) ++bits;
  return bits;
}

}  // namespace

void csr_build(const Array& keys, const Array& values, int64_t num_nodes, const Array& indptr,
               const Array& sorted_values, const Array& eid, const std::string& keys_name,
               const std::string& values_name, Stream stream) {
  graph::check_csr_args(keys, values, num_nodes, indptr, sorted_values, eid);
  dispatch_index(keys.dtype, keys_name.c_str(), [&](auto tag) {
    using I = typename decltype(tag)::type;
    DeviceGuard guard(stream);
    cudaStream_t s = cuda_stream(stream);
    const int64_t e = keys.size, n = num_nodes;
    const I* k = static_cast<const I*>(keys.data);
    const I* v = static_cast<const I*>(values.data);
    DeviceBuffer<int> flags(1, s);
    CK_CUDA_CHECK(cudaMemsetAsync(flags.get(), 0, sizeof(int), s));
    if (e > 0) validate_kernel<I><<<grid_for(e, kThreads), kThreads, 0, s>>>(k, v, e, n, flags.get());
    check_launch();
    int host_flags = 0;
    CK_CUDA_CHECK(cudaMemcpyAsync(&host_flags, flags.get(), sizeof(int), cudaMemcpyDeviceToHost, s));
    CK_CUDA_CHECK(cudaStreamSynchronize(s));
    check(!(host_flags & 1), keys_name + ": expected node indices in [0, " + std::to_string(n) + ")");
    check(!(host_flags & 2), values_name + ": expected node indices in [0, " + std::to_string(n) + ")");
    int64_t* ptr = static_cast<int64_t*>(indptr.data);
    int64_t* ids_out = static_cast<int64_t*>(eid.data);
    if (e == 0) {
      CK_CUDA_CHECK(cudaMemsetAsync(ptr, 0, size_t(n + 1) * sizeof(int64_t), s));
      return;
    }
    check(e <= (int64_t(1) << 31) - 1, "edge_index: more than 2^31 - 1 edges are not supported on CUDA");
    DeviceBuffer<I> sorted_keys(size_t(e), s);
    DeviceBuffer<int64_t> ids(size_t(e), s);
    iota_kernel<int64_t><<<grid_for(e, kThreads), kThreads, 0, s>>>(ids.get(), e);
    check_launch();
    size_t temp_bytes = 0;
    CK_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, k, sorted_keys.get(), ids.get(), ids_out,
                                                  int(e), 0, key_bits(n), s));
    DeviceBuffer<char> temp(temp_bytes, s);
    CK_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.get(), temp_bytes, k, sorted_keys.get(), ids.get(), ids_out,
                                                  int(e), 0, key_bits(n), s));
    indptr_kernel<I><<<grid_for(n + 1, kThreads), kThreads, 0, s>>>(sorted_keys.get(), e, n, ptr);
    check_launch();
    gather_kernel<I><<<grid_for(e, kThreads), kThreads, 0, s>>>(v, ids_out, e, static_cast<I*>(sorted_values.data));
    check_launch();
  });
}

}  // namespace ck::CK_BACKEND
