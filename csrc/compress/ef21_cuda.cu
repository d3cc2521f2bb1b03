// EF21 top-k on the GPU, in the same two steps as the CPU launch (ef21_cpu.cpp): an elementwise kernel
// writes d = grad - state into the caller's scratch buffer, the library's top-k selects from d on the same
// stream, and a scatter kernel updates the k sent entries of the state (distinct indices: no atomics).
#include "../common/cuda_utils.cuh"
#include "api.h"
#include "ef21.h"

namespace ck::CK_BACKEND {
namespace {

template <class G, class S>
__global__ void difference_kernel(const G* __restrict__ grad, const S* __restrict__ state, S* __restrict__ d,
                                  int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    d[i] = ef21_difference(grad[i], state[i]);
}

template <class S>
__global__ void update_kernel(S* __restrict__ state, const S* __restrict__ values, const int32_t* __restrict__ idx,
                              int64_t k) {
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < k; j += int64_t(gridDim.x) * blockDim.x)
    state[idx[j]] = ef21_update(state[idx[j]], values[j]);
}

}  // namespace

void ef21_topk(const Array& grad, const Array& state, const Array& scratch, int64_t k, const Array& values,
               const Array& indices, Stream stream) {
  with_ef21_args(grad, state, scratch, k, values, indices,
                 [&](const auto* g, auto* s, auto* d, auto* vals, int32_t* idx) {
    DeviceGuard guard(stream);
    const cudaStream_t cs = cuda_stream(stream);
    constexpr int kThreads = 256;
    const int64_t n = grad.size;
    if (n > 0) {
      difference_kernel<<<grid_for(n, kThreads), kThreads, 0, cs>>>(g, s, d, n);
      check_launch();
    }
    topk(scratch, k, values, indices, stream);
    if (k > 0) {
      update_kernel<<<grid_for(k, kThreads), kThreads, 0, cs>>>(s, vals, idx, k);
      check_launch();
    }
  });
}

}  // namespace ck::CK_BACKEND
