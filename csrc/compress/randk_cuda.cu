// Rand-k on the GPU: one thread per permutation entry, then a device radix sort into ascending order.
#include <cub/device/device_radix_sort.cuh>

#include "../common/cuda_utils.cuh"
#include "api.h"
#include "args.h"
#include "randk.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int kThreads = 256;

__global__ void permutation_kernel(FeistelPermutation perm, int64_t k, uint32_t* out) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < k; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = uint32_t(perm(uint64_t(i)));
}

template <class T>
__global__ void gather_scaled_kernel(const T* __restrict__ x, const int32_t* __restrict__ indices, int64_t k,
                                     acc_t<T> scale, T* __restrict__ values) {
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < k; j += int64_t(gridDim.x) * blockDim.x)
    values[j] = from_acc<T>(acc_t<T>(to_acc(x[indices[j]])) * scale);
}

void randk_indices_launch(int64_t size, int64_t k, uint64_t seed, uint64_t step, int32_t* indices, cudaStream_t s) {
  const FeistelPermutation perm = FeistelPermutation::make(uint64_t(size), seed, step);
  DeviceBuffer<uint32_t> unsorted(size_t(k), s);
  permutation_kernel<<<grid_for(k, kThreads), kThreads, 0, s>>>(perm, k, unsorted.get());
  check_launch();
  // Values are below 2^(2h): sort only those bits. Unsigned keys, so no sign-bit handling is involved.
  uint32_t* sorted = reinterpret_cast<uint32_t*>(indices);
  size_t temp_bytes = 0;
  CK_CUDA_CHECK(cub::DeviceRadixSort::SortKeys(nullptr, temp_bytes, unsorted.get(), sorted, k, 0,
                                               perm.bits, s));
  DeviceBuffer<unsigned char> temp(temp_bytes, s);
  CK_CUDA_CHECK(cub::DeviceRadixSort::SortKeys(temp.get(), temp_bytes, unsorted.get(), sorted, k, 0,
                                               perm.bits, s));
}

}  // namespace

void randk_indices(int64_t size, int64_t k, uint64_t seed, uint64_t step, const Array& indices, Stream stream) {
  check_randk_args(size, k, indices);
  if (k == 0) return;
  DeviceGuard guard(stream);
  randk_indices_launch(size, k, seed, step, indices.as<int32_t>("indices"), cuda_stream(stream));
}

void randk(const Array& x, int64_t k, uint64_t seed, uint64_t step, bool unbiased, const Array& values,
           const Array& indices, Stream stream) {
  check_randk_args(x.size, k, indices);
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    check_sparse_outputs<T>(k, values, indices);
    if (k == 0) return;
    DeviceGuard guard(stream);
    const cudaStream_t s = cuda_stream(stream);
    int32_t* index = indices.as<int32_t>("indices");
    randk_indices_launch(x.size, k, seed, step, index, s);
    gather_scaled_kernel<<<grid_for(k, kThreads), kThreads, 0, s>>>(
        static_cast<const T*>(x.data), index, k, acc_t<T>(randk_scale(x.size, k, unbiased)), values.as<T>("values"));
    check_launch();
  });
}

}  // namespace ck::CK_BACKEND
