// The weighted mean on the GPU: one thread per coordinate (grid-stride), adding the workers in index order,
// as the CPU does: the same sums, bit for bit. Reads are coalesced along each row. An unweighted mean
// passes no weight buffer (no copy, no allocation) and adds the values themselves: 1 * x == x exactly, so
// the bits are those of the weighted kernel with unit weights.
#include <vector>

#include "../common/cuda_utils.cuh"
#include "mean.h"
#include "rows_cuda.cuh"

namespace ck::CK_BACKEND {
namespace {

constexpr int kThreads = 256;

// Products rounded on their own, never fused into an FMA with the sum: the CPU build (baseline x86-64)
// has no FMA, and the two must give the same bits.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

// w[i] * x (rounded on its own), or x itself when there are no weights (w == nullptr).
template <bool kWeighted, class A>
__device__ __forceinline__ A term(const A* __restrict__ w, int64_t i, A x) {
  if constexpr (kWeighted) return mul_rn(w[i], x);
  return x;
}

template <bool kWeighted, class T>
__global__ void mean_kernel(RowView<T> X, const acc_t<T>* __restrict__ w, acc_t<T> total, T* __restrict__ out) {
  using A = acc_t<T>;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < X.d; j += int64_t(gridDim.x) * blockDim.x) {
    A acc = term<kWeighted>(w, 0, to_acc(X.row(0)[j]));
    for (int64_t i = 1; i < X.n; ++i) acc += term<kWeighted>(w, i, to_acc(X.row(i)[j]));
    out[j] = from_acc<T>(acc / total);
  }
}

}  // namespace

void mean(const Rows& X, const std::vector<double>& weights, const Array& out, Stream stream) {
  check_mean_args(X, weights, out);
  dispatch_float(X.dtype, "X", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    std::vector<A> w(size_t(X.n), A(1));
    A total = A(X.n);
    if (!weights.empty()) {
      total = A(0);
      for (size_t i = 0; i < w.size(); ++i) total += (w[i] = A(weights[i]));
      check(total > 0 && std::isfinite(double(total)), "weights: their sum is not a positive finite number in the accumulation type");
    }
    if (X.d == 0) return;
    DeviceGuard guard(stream);
    const cudaStream_t s = cuda_stream(stream);
    DeviceRows rows(X, s);
    T* const y = static_cast<T*>(out.data);
    if (weights.empty()) {
      mean_kernel<false, T><<<grid_for(X.d, kThreads), kThreads, 0, s>>>(rows.view<T>(), nullptr, total, y);
    } else {
      DeviceBuffer<A> device_w(w.size(), s);
      // a pageable copy returns once staged, so the host vector may go away after this
      CK_CUDA_CHECK(cudaMemcpyAsync(device_w.get(), w.data(), w.size() * sizeof(A), cudaMemcpyHostToDevice, s));
      mean_kernel<true, T><<<grid_for(X.d, kThreads), kThreads, 0, s>>>(rows.view<T>(), device_w.get(), total, y);
    }
    check_launch();
  });
}

}  // namespace ck::CK_BACKEND
