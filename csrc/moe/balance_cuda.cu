// MoE balancing kernels on the GPU. No floating-point atomics: column sums run per fixed row chunk (the
// chunks of the CPU) and are combined in chunk order by one block; expert counts use integer atomics; the
// z-loss sums per-block partials in block order.
#include <cub/block/block_reduce.cuh>

#include <string>

#include "../common/cuda_utils.cuh"
#include "balance.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int kThreads = 256;

__device__ int64_t chunk_begin(int64_t n, int64_t chunks, int64_t c) { return n / chunks * c + min(c, n % chunks); }

template <class T>
__global__ void column_sums(const T* __restrict__ p, int64_t T_, int64_t E, int chunks, double* __restrict__ partial) {
  using A = acc_t<T>;
  const int64_t j = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (j >= E) return;
  const int64_t c = blockIdx.x;
  const int64_t begin = chunk_begin(T_, chunks, c), end = chunk_begin(T_, chunks, c + 1);
  double sum = 0.0;
  for (int64_t b = begin; b < end; b += 256) {
    const int64_t stop = min(b + 256, end);
    A block = A(0);
    for (int64_t t = b; t < stop; ++t) block += to_acc(p[t * E + j]);
    sum += double(block);
  }
  partial[c * E + j] = sum;
}

template <class I>
__global__ void count_ids(const I* __restrict__ ids, int64_t T_, int64_t k, int64_t used, int64_t E,
                          unsigned long long* __restrict__ counts) {
  const int64_t n = T_ * used;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t id = int64_t(ids[(i / used) * k + i % used]);
    if (id >= 0 && id < E) atomicAdd(counts + id, 1ull);  // out-of-range ids are refused by the Python layer
  }
}

template <class A>
__global__ void lbl_finish(const double* __restrict__ partial, const unsigned long long* __restrict__ counts,
                           int chunks, int64_t T_, int64_t E, int64_t used, A* __restrict__ loss,
                           A* __restrict__ fraction) {
  using Reduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  double total = 0.0;
  for (int64_t j = threadIdx.x; j < E; j += blockDim.x) {
    double s = 0.0;
    for (int c = 0; c < chunks; ++c) s += partial[c * E + j];
    const double f = T_ ? double(counts[j]) / double(T_ * used) : 0.0;
    fraction[j] = A(f);
    total += f * (T_ ? s / double(T_) : 0.0);
  }
  const double sum = Reduce(temp).Sum(total);
  if (threadIdx.x == 0) loss[0] = A(double(E) * sum);
}

template <class T>
__global__ void z_rows(const T* __restrict__ x, int64_t T_, int64_t E, acc_t<T>* __restrict__ lse,
                       double* __restrict__ partial) {
  using A = acc_t<T>;
  using Reduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  double sq = 0.0;
  if (t < T_) {
    const moe::RowStats<A> st = moe::row_stats(x + t * E, E);
    const A v = moe::fadd(st.max, st.log_sum);
    lse[t] = v;
    sq = double(v) * double(v);
  }
  const double sum = Reduce(temp).Sum(sq);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

template <class A>
__global__ void z_finish(const double* __restrict__ partial, int64_t blocks, int64_t T_, A* __restrict__ loss) {
  double total = 0.0;
  for (int64_t b = 0; b < blocks; ++b) total += partial[b];
  loss[0] = A(T_ ? total / double(T_) : 0.0);
}

template <class T>
__global__ void z_backward(const T* __restrict__ x, const acc_t<T>* __restrict__ lse, const acc_t<T>* __restrict__ grad,
                           int64_t T_, int64_t E, T* __restrict__ out) {
  using A = acc_t<T>;
  const A scale = T_ ? A(double(grad[0]) * 2.0 / double(T_)) : A(0);
  const int64_t n = T_ * E;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const A lt = lse[i / E];
    out[i] = from_acc<T>(moe::fmul(moe::fmul(scale, lt), moe::exp_acc(moe::fsub(to_acc(x[i]), lt))));
  }
}

template <class C, class S>
__global__ void bias_rows(float* __restrict__ bias, const C* __restrict__ counts, int64_t E, float rate) {
  using Reduce = cub::BlockReduce<S, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  __shared__ S total;
  const int64_t row = blockIdx.x;
  const C* c = counts + row * E;
  float* b = bias + row * E;
  S sum = 0;
  for (int64_t j = threadIdx.x; j < E; j += blockDim.x) sum += S(c[j]);
  const S all = Reduce(temp).Sum(sum);
  if (threadIdx.x == 0) total = all;
  __syncthreads();
  for (int64_t j = threadIdx.x; j < E; j += blockDim.x) {
    const S d = total - S(E) * S(c[j]);
    const float sign = d > 0 ? 1.0f : (d < 0 ? -1.0f : (d == 0 ? 0.0f : __int_as_float(0x7fc00000)));
    b[j] = __fadd_rn(b[j], __fmul_rn(rate, sign));
  }
}

}  // namespace

void load_balancing_loss(const Array& probs, const Array& ids, int64_t T, int64_t E, int64_t k, bool first_only,
                         const Array& loss, const Array& fraction, Stream stream) {
  moe::check_matrix(probs, T, E, "probs");
  check(k >= 1 && ids.size == T * k, "ids: expected T * k elements with k >= 1");
  check(ids.dtype == DType::int32 || ids.dtype == DType::int64, "ids: expected dtype int32 or int64");
  moe::check_acc_array(loss, probs.dtype, 1, "loss");
  moe::check_acc_array(fraction, probs.dtype, E, "fraction");
  check(E <= (int64_t(1) << 31) * kThreads, "probs: too many experts");
  dispatch_float(probs.dtype, "probs", [&](auto tag) {
    using T_ = typename decltype(tag)::type;
    using A = acc_t<T_>;
    DeviceGuard guard(stream);
    cudaStream_t s = cuda_stream(stream);
    const int chunks = moe::row_chunks(T);
    const int64_t used = first_only ? 1 : k;
    DeviceBuffer<double> partial(size_t(chunks) * size_t(E), s);
    DeviceBuffer<unsigned long long> counts(size_t(E), s);
    CK_CUDA_CHECK(cudaMemsetAsync(counts.get(), 0, size_t(E) * sizeof(unsigned long long), s));
    column_sums<T_><<<dim3(unsigned(chunks), unsigned((E + kThreads - 1) / kThreads)), kThreads, 0, s>>>(
        static_cast<const T_*>(probs.data), T, E, chunks, partial.get());
    check_launch();
    if (T > 0) {
      const unsigned grid = grid_for(T * used, kThreads);
      if (ids.dtype == DType::int32)
        count_ids<<<grid, kThreads, 0, s>>>(static_cast<const int32_t*>(ids.data), T, k, used, E, counts.get());
      else
        count_ids<<<grid, kThreads, 0, s>>>(static_cast<const int64_t*>(ids.data), T, k, used, E, counts.get());
      check_launch();
    }
    lbl_finish<A><<<1, kThreads, 0, s>>>(partial.get(), counts.get(), chunks, T, E, used,
                                         static_cast<A*>(loss.data), static_cast<A*>(fraction.data));
    check_launch();
  });
}

void z_loss(const Array& logits, int64_t T, int64_t E, const Array& loss, const Array& lse, Stream stream) {
  moe::check_matrix(logits, T, E, "logits");
  moe::check_acc_array(loss, logits.dtype, 1, "loss");
  moe::check_acc_array(lse, logits.dtype, T, "lse");
  dispatch_float(logits.dtype, "logits", [&](auto tag) {
    using T_ = typename decltype(tag)::type;
    using A = acc_t<T_>;
    DeviceGuard guard(stream);
    cudaStream_t s = cuda_stream(stream);
    const int64_t blocks = T > 0 ? (T + kThreads - 1) / kThreads : 0;
    DeviceBuffer<double> partial(size_t(blocks), s);
    if (blocks > 0) {
      z_rows<T_><<<unsigned(blocks), kThreads, 0, s>>>(static_cast<const T_*>(logits.data), T, E,
                                                       static_cast<A*>(lse.data), partial.get());
      check_launch();
    }
    z_finish<A><<<1, 1, 0, s>>>(partial.get(), blocks, T, static_cast<A*>(loss.data));
    check_launch();
  });
}

void z_loss_backward(const Array& logits, const Array& lse, const Array& grad, int64_t T, int64_t E,
                     const Array& grad_logits, Stream stream) {
  moe::check_matrix(logits, T, E, "logits");
  moe::check_acc_array(lse, logits.dtype, T, "lse");
  moe::check_acc_array(grad, logits.dtype, 1, "grad");
  check(grad_logits.dtype == logits.dtype && grad_logits.size == logits.size,
        "grad_logits: expected logits' dtype and size");
  dispatch_float(logits.dtype, "logits", [&](auto tag) {
    using T_ = typename decltype(tag)::type;
    using A = acc_t<T_>;
    if (T * E == 0) return;
    DeviceGuard guard(stream);
    z_backward<T_><<<grid_for(T * E, kThreads), kThreads, 0, cuda_stream(stream)>>>(
        static_cast<const T_*>(logits.data), static_cast<const A*>(lse.data), static_cast<const A*>(grad.data), T, E,
        static_cast<T_*>(grad_logits.data));
    check_launch();
  });
}

void update_expert_bias(const Array& bias, const Array& counts, int64_t E, double rate, Stream stream) {
  check(E >= 1 && bias.size % E == 0, "bias: expected a multiple of E elements");
  check(counts.size == bias.size, "counts: expected as many elements as bias");
  float* b = bias.as<float>("bias");
  const int64_t rows = bias.size / E;
  if (rows == 0) return;
  check(rows <= (int64_t(1) << 31) - 1, "bias: too many rows");
  DeviceGuard guard(stream);
  cudaStream_t s = cuda_stream(stream);
  const float r = float(rate);
  switch (counts.dtype) {
    case DType::int32:
      bias_rows<int32_t, long long><<<unsigned(rows), kThreads, 0, s>>>(b, static_cast<const int32_t*>(counts.data), E, r);
      break;
    case DType::int64:
      bias_rows<int64_t, long long><<<unsigned(rows), kThreads, 0, s>>>(b, static_cast<const int64_t*>(counts.data), E, r);
      break;
    case DType::float32:
      bias_rows<float, double><<<unsigned(rows), kThreads, 0, s>>>(b, static_cast<const float*>(counts.data), E, r);
      break;
    case DType::float64:
      bias_rows<double, double><<<unsigned(rows), kThreads, 0, s>>>(b, static_cast<const double*>(counts.data), E, r);
      break;
    default: throw TypeError("counts: expected dtype int32, int64, float32 or float64");
  }
  check_launch();
}

}  // namespace ck::CK_BACKEND
