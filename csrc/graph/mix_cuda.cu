// Gossip mixing on the GPU: one launch per round, a thread per output element (row i, column c; threads
// of a warp take consecutive columns, so the reads of x are coalesced and W[i, j] is a broadcast).
// Rounds in between are kept in accumulation-type scratch; each element sums over j (or the CSR slots) in
// ascending order, as on the CPU. (The Python layer turns dense rounds into one product with W^rounds
// where that is cheaper, so the per-round path matters for sparse W.)
#include <cub/block/block_reduce.cuh>

#include "../common/cuda_utils.cuh"
#include "csr.h"
#include "mix.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int kThreads = 256;

template <class In, class Out, class A>
__global__ void dense_round_kernel(const In* __restrict__ x, const A* __restrict__ w, Out* __restrict__ y, int64_t n,
                                   int64_t d) {
  const int64_t total = n * d;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / d, c = e - i * d;
    A acc = A(0);
    for (int64_t j = 0; j < n; ++j) acc += w[i * n + j] * A(to_acc(x[j * d + c]));
    y[e] = from_acc<Out>(acc);
  }
}

template <class In, class Out, class A, class I>
__global__ void csr_round_kernel(const In* __restrict__ x, const int64_t* __restrict__ indptr,
                                 const I* __restrict__ indices, const A* __restrict__ weight, Out* __restrict__ y,
                                 int64_t n, int64_t d) {
  const int64_t total = n * d;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / d, c = e - i * d;
    A acc = A(0);
    for (int64_t s = indptr[i]; s < indptr[i + 1]; ++s) acc += weight[s] * A(to_acc(x[int64_t(indices[s]) * d + c]));
    y[e] = from_acc<Out>(acc);
  }
}

template <class T, class A>
__global__ void copy_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t total) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x)
    y[e] = x[e];
}

// Applies `launch(in, out)` rounds times: x -> (scratch A) -> ... -> y.
template <class T, class Launch>
void run_rounds(const T* x, T* y, int64_t n, int64_t d, int64_t rounds, cudaStream_t s, Launch&& launch) {
  using A = acc_t<T>;
  const int64_t total = n * d;
  if (total == 0) return;
  if (rounds == 0) {
    copy_kernel<T, A><<<grid_for(total, kThreads), kThreads, 0, s>>>(x, y, total);
    check_launch();
    return;
  }
  if (rounds == 1) return launch(x, y);
  DeviceBuffer<A> ping(size_t(total), s);
  DeviceBuffer<A> pong(size_t(rounds > 2 ? total : 1), s);
  launch(x, ping.get());
  A* cur = ping.get();
  A* other = pong.get();
  for (int64_t r = 1; r + 1 < rounds; ++r) {
    launch(static_cast<const A*>(cur), other);
    A* t = cur;
    cur = other;
    other = t;
  }
  launch(static_cast<const A*>(cur), y);
}

}  // namespace

void mix_dense(const Array& x, const Array& w, int64_t n, int64_t d, int64_t rounds, const Array& y, Stream stream) {
  graph::check_mix_dense(x, w, n, d, rounds, y);
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    DeviceGuard guard(stream);
    cudaStream_t s = cuda_stream(stream);
    const A* wp = static_cast<const A*>(w.data);
    const unsigned grid = grid_for(n * d, kThreads);
    run_rounds<T>(static_cast<const T*>(x.data), static_cast<T*>(y.data), n, d, rounds, s, [&](auto in, auto out) {
      using In = std::remove_cv_t<std::remove_pointer_t<decltype(in)>>;
      using Out = std::remove_pointer_t<decltype(out)>;
      dense_round_kernel<In, Out, A><<<grid, kThreads, 0, s>>>(in, wp, out, n, d);
      check_launch();
    });
  });
}

void mix_csr(const Array& x, const Array& indptr, const Array& indices, const Array& weight, int64_t n, int64_t d,
             int64_t rounds, const Array& y, Stream stream) {
  graph::check_mix_csr(x, indptr, indices, weight, n, d, rounds, y);
  dispatch_index(indices.dtype, "indices", [&](auto itag) {
    using I = typename decltype(itag)::type;
    dispatch_float(x.dtype, "x", [&](auto tag) {
      using T = typename decltype(tag)::type;
      using A = acc_t<T>;
      DeviceGuard guard(stream);
      cudaStream_t s = cuda_stream(stream);
      const int64_t* ptr = static_cast<const int64_t*>(indptr.data);
      const I* idx = static_cast<const I*>(indices.data);
      const A* wp = static_cast<const A*>(weight.data);
      const unsigned grid = grid_for(n * d, kThreads);
      run_rounds<T>(static_cast<const T*>(x.data), static_cast<T*>(y.data), n, d, rounds, s, [&](auto in, auto out) {
        using In = std::remove_cv_t<std::remove_pointer_t<decltype(in)>>;
        using Out = std::remove_pointer_t<decltype(out)>;
        csr_round_kernel<In, Out, A, I><<<grid, kThreads, 0, s>>>(in, ptr, idx, wp, out, n, d);
        check_launch();
      });
    });
  });
}

namespace {

constexpr int kReduceBlocks = 256;  // fixed: the reduction order does not depend on the device

template <class T>
__global__ void consensus_partial_kernel(const T* __restrict__ x, int64_t n, int64_t d, double* __restrict__ partial) {
  using Reduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  double total = 0.0;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < d; c += int64_t(gridDim.x) * blockDim.x) {
    double mean = 0.0;
    for (int64_t i = 0; i < n; ++i) mean += double(to_acc(x[i * d + c]));
    mean /= double(n);
    double sq = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double dev = double(to_acc(x[i * d + c])) - mean;
      sq += dev * dev;
    }
    total += sq;
  }
  const double block = Reduce(temp).Sum(total);
  if (threadIdx.x == 0) partial[blockIdx.x] = block;
}

__global__ void consensus_final_kernel(const double* __restrict__ partial, int64_t n, double* __restrict__ out) {
  using Reduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  double v = 0.0;
  for (int b = threadIdx.x; b < kReduceBlocks; b += blockDim.x) v += partial[b];
  const double total = Reduce(temp).Sum(v);
  if (threadIdx.x == 0) out[0] = n > 0 ? total / double(n) : 0.0;
}

}  // namespace

void consensus_distance(const Array& x, int64_t n, int64_t d, const Array& out, Stream stream) {
  check(n >= 0 && d >= 0 && x.size == n * d, "x: expected n * d elements");
  if (out.dtype != DType::float64) throw TypeError("out: expected float64");
  check(out.size == 1, "out: expected 1 element");
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    DeviceGuard guard(stream);
    cudaStream_t s = cuda_stream(stream);
    DeviceBuffer<double> partial(kReduceBlocks, s);
    consensus_partial_kernel<T><<<kReduceBlocks, kThreads, 0, s>>>(static_cast<const T*>(x.data), n, d, partial.get());
    check_launch();
    consensus_final_kernel<<<1, kThreads, 0, s>>>(partial.get(), n, static_cast<double*>(out.data));
    check_launch();
  });
}

}  // namespace ck::CK_BACKEND
