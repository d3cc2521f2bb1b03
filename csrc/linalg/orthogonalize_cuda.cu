// Batched Gram-Schmidt on the GPU: one block per matrix (grid-stride over the batch), the same column
// order and zeroing rule as the CPU (orthogonalize.h). Each sum over rows is a per-thread sum over a fixed
// stride of rows followed by cub::BlockReduce, so it is deterministic run after run; its rounding differs
// from the CPU's chunked row-order sum, so CPU and CUDA agree to a tolerance, not bitwise.
#include <cub/block/block_reduce.cuh>

#include <type_traits>

#include "../common/cuda_utils.cuh"
#include "orthogonalize.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int kThreads = 256;

template <class A>
__device__ A block_sum(A value, typename cub::BlockReduce<A, kThreads>::TempStorage& temp, A* shared) {
  const A total = cub::BlockReduce<A, kThreads>(temp).Sum(value);
  if (threadIdx.x == 0) *shared = total;
  __syncthreads();
  const A result = *shared;
  __syncthreads();
  return result;
}

// work: the batch of matrices in acc_t (P itself when T is acc_t); aux: 2 r acc_t values per matrix.
template <class T, class A>
__global__ void orthogonalize_kernel(T* __restrict__ p, A* __restrict__ work, A* __restrict__ aux, int64_t batch,
                                     int64_t n, int64_t r, A eps, A rtol) {
  __shared__ typename cub::BlockReduce<A, kThreads>::TempStorage temp;
  __shared__ A shared;
  const int64_t per = n * r;
  for (int64_t b = blockIdx.x; b < batch; b += gridDim.x) {
    A* m = work + b * per;
    A* original = aux + b * 2 * r;
    A* dots = original + r;
    if constexpr (!std::is_same_v<T, A>) {
      for (int64_t e = threadIdx.x; e < per; e += blockDim.x) m[e] = to_acc(p[b * per + e]);
      __syncthreads();
    }
    for (int64_t j = 0; j < r; ++j) {
      A sq = 0;
      for (int64_t row = threadIdx.x; row < n; row += blockDim.x) sq += m[row * r + j] * m[row * r + j];
      const A total = block_sum(sq, temp, &shared);
      if (threadIdx.x == 0) original[j] = sqrt(total);
    }
    __syncthreads();
    for (int64_t i = 0; i < r; ++i) {
      A sq = 0;
      for (int64_t row = threadIdx.x; row < n; row += blockDim.x) sq += m[row * r + i] * m[row * r + i];
      const A scale = orthogonalize_scale(A(sqrt(block_sum(sq, temp, &shared))), original[i], eps, rtol);
      for (int64_t row = threadIdx.x; row < n; row += blockDim.x) m[row * r + i] *= scale;
      __syncthreads();
      if (scale == A(0)) continue;
      for (int64_t j = i + 1; j < r; ++j) {
        A dot = 0;
        for (int64_t row = threadIdx.x; row < n; row += blockDim.x) dot += m[row * r + i] * m[row * r + j];
        const A total = block_sum(dot, temp, &shared);
        if (threadIdx.x == 0) dots[j] = total;
      }
      __syncthreads();
      for (int64_t row = threadIdx.x; row < n; row += blockDim.x) {
        const A q = m[row * r + i];
        for (int64_t j = i + 1; j < r; ++j) m[row * r + j] -= dots[j] * q;
      }
      __syncthreads();
    }
    if constexpr (!std::is_same_v<T, A>) {
      for (int64_t e = threadIdx.x; e < per; e += blockDim.x) p[b * per + e] = from_acc<T>(m[e]);
    }
    __syncthreads();
  }
}

}  // namespace

void orthogonalize(const Array& p, int64_t batch, int64_t n, int64_t r, double eps, Stream stream) {
  check_orthogonalize_args(p, batch, n, r, eps);
  if (p.size == 0) return;
  dispatch_float(p.dtype, "P", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    DeviceGuard guard(stream);
    const cudaStream_t s = cuda_stream(stream);
    DeviceBuffer<A> aux(size_t(batch * 2 * r), s);
    const unsigned blocks = unsigned(batch < 65535 ? batch : 65535);
    T* data = static_cast<T*>(p.data);
    if constexpr (std::is_same_v<T, A>) {
      orthogonalize_kernel<T, A><<<blocks, kThreads, 0, s>>>(data, data, aux.get(), batch, n, r, A(eps),
                                                             orthogonalize_rtol<A>(n));
      check_launch();
    } else {
      DeviceBuffer<A> work(size_t(p.size), s);
      orthogonalize_kernel<T, A><<<blocks, kThreads, 0, s>>>(data, work.get(), aux.get(), batch, n, r, A(eps),
                                                             orthogonalize_rtol<A>(n));
      check_launch();
    }
  });
}

}  // namespace ck::CK_BACKEND
