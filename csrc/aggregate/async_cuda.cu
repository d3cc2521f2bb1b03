// Asynchronous averaging and honest-set moments on the GPU, with the CPU's task decomposition (async.h):
// the per-task statistics are reduced by one block each (cub::BlockReduce: a fixed tree, deterministic),
// merged per segment in task order by one thread per row, and the output is rescaled by a third kernel.
// No atomics. Values match the CPU within rounding (the order of the sums inside a task differs).
#include <cub/block/block_reduce.cuh>

#include <vector>

#include "../common/cuda_utils.cuh"
#include "async.h"
#include "rows_cuda.cuh"

namespace ck::CK_BACKEND {
namespace {

constexpr int kThreads = 256;

template <class B, class U>
__global__ void axpy_kernel(B* __restrict__ b, const U* __restrict__ u, acc_t<B> w, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    b[i] = buffer_axpy(b[i], u[i], w);
}

template <class X, class U>
__global__ void mix_kernel(X* __restrict__ x, const U* __restrict__ u, acc_t<X> alpha, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = mix(x[i], u[i], alpha);
}

// One block per task: per row the chunk's mean and sum of squared deviations, the weighted mixture m
// (shared memory, each element owned by one thread), its statistics, and m written (rounded) to out.
template <class T>
__global__ void vcm_task_kernel(RowView<T> x, const VcmTask* __restrict__ tasks, const double* __restrict__ weights,
                                double* __restrict__ stats, T* __restrict__ out) {
  using A = acc_t<T>;
  using Reduce = cub::BlockReduce<A, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  __shared__ A m[kVcmChunk];
  __shared__ A shared_mean;
  const VcmTask task = tasks[blockIdx.x];
  const int64_t n = x.n, L = task.end - task.begin;
  double* st = stats + int64_t(blockIdx.x) * (n + 1) * 2;
  for (int64_t i = 0; i <= n; ++i) {
    const T* p = i < n ? x.row(i) + task.begin : nullptr;
    const A w = i < n ? A(weights[i]) : A(0);
    A s = 0;
    for (int64_t j = threadIdx.x; j < L; j += blockDim.x) {
      if (i < n) {
        const A v = A(to_acc(p[j]));
        s += v;
        m[j] = (i == 0 ? A(0) : m[j]) + w * v;
      } else {
        s += m[j];
      }
    }
    const A total = Reduce(temp).Sum(s);
    if (threadIdx.x == 0) shared_mean = total / A(L);
    __syncthreads();
    const A mean = shared_mean;
    A q = 0;
    for (int64_t j = threadIdx.x; j < L; j += blockDim.x) {
      const A v = (i < n ? A(to_acc(p[j])) : m[j]) - mean;
      q += v * v;
    }
    const A m2 = Reduce(temp).Sum(q);
    if (threadIdx.x == 0) {
      st[2 * i] = double(mean);
      st[2 * i + 1] = double(m2);
    }
    __syncthreads();  // temp and shared_mean are reused by the next row
  }
  for (int64_t j = threadIdx.x; j < L; j += blockDim.x) out[task.begin + j] = from_acc<T>(m[j]);
}

// One block per segment: thread i merges row i's task statistics in task order; thread 0 then scales.
__global__ void vcm_segment_kernel(const VcmTask* __restrict__ tasks, const int64_t* __restrict__ first,
                                   const double* __restrict__ stats, const double* __restrict__ weights, int64_t n,
                                   double eps, Moments* __restrict__ merged, double* __restrict__ params) {
  const int64_t s = blockIdx.x;
  Moments* acc = merged + s * (n + 1);
  for (int64_t i = threadIdx.x; i <= n; i += blockDim.x) {
    Moments a;
    for (int64_t t = first[s]; t < first[s + 1]; ++t) {
      const double* st = stats + t * (n + 1) * 2;
      merge_moments(a, double(tasks[t].end - tasks[t].begin), st[2 * i], st[2 * i + 1]);
    }
    acc[i] = a;
  }
  __syncthreads();
  if (threadIdx.x == 0) params[3 * s + 2] = vcm_scale(acc, weights, n, eps, &params[3 * s], &params[3 * s + 1]);
}

template <class T>
__global__ void vcm_rescale_kernel(const VcmTask* __restrict__ tasks, const double* __restrict__ params,
                                   T* __restrict__ out) {
  using A = acc_t<T>;
  const VcmTask task = tasks[blockIdx.x];
  if (params[3 * task.segment + 2] == 0.0) return;  // a segment of fewer than two elements
  const A mu = A(params[3 * task.segment]), scale = A(params[3 * task.segment + 1]);
  for (int64_t j = task.begin + threadIdx.x; j < task.end; j += blockDim.x) out[j] = vcm_rescale(out[j], mu, scale);
}

// One block per column chunk: thread t owns columns t, t + blockDim, ... of the chunk (coalesced rows).
template <class T, class C>
__global__ void moments_kernel(RowView<T> x, const C* __restrict__ center, T* __restrict__ mean_out,
                               T* __restrict__ std_out, double* __restrict__ partial) {
  using A = acc_t<T>;
  using Reduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  constexpr int kPer = int(kMomentChunk / kThreads);
  const int64_t begin = int64_t(blockIdx.x) * kMomentChunk;
  const int64_t h = x.n;
  const A inv_h = A(1) / A(h), inv_h1 = A(1) / A(h - 1);
  A mean[kPer], m2[kPer];
  for (int k = 0; k < kPer; ++k) mean[k] = m2[k] = A(0);
  for (int64_t i = 0; i < h; ++i) {
    const T* p = x.row(i);
    for (int k = 0; k < kPer; ++k) {
      const int64_t j = begin + threadIdx.x + int64_t(k) * kThreads;
      if (j < x.d) mean[k] += A(to_acc(p[j]));
    }
  }
  for (int k = 0; k < kPer; ++k) mean[k] *= inv_h;
  for (int64_t i = 0; i < h; ++i) {
    const T* p = x.row(i);
    for (int k = 0; k < kPer; ++k) {
      const int64_t j = begin + threadIdx.x + int64_t(k) * kThreads;
      if (j < x.d) {
        const A v = A(to_acc(p[j])) - mean[k];
        m2[k] += v * v;
      }
    }
  }
  double tv = 0, td = 0;
  for (int k = 0; k < kPer; ++k) {
    const int64_t j = begin + threadIdx.x + int64_t(k) * kThreads;
    if (j >= x.d) continue;
    const A var = m2[k] * inv_h1;
    tv += double(var);
    if (center) {
      const double dev = double(to_acc(center[j])) - double(mean[k]);
      td += dev * dev;
    }
    if (mean_out) mean_out[j] = from_acc<T>(mean[k]);
    if (std_out) std_out[j] = from_acc<T>(A(sqrt(var)));
  }
  const double total_var = Reduce(temp).Sum(tv);
  __syncthreads();
  const double total_dev = Reduce(temp).Sum(td);
  if (threadIdx.x == 0) {
    partial[2 * blockIdx.x] = total_var;
    partial[2 * blockIdx.x + 1] = total_dev;
  }
}

// One thread sums the chunks' partial totals in chunk order (as the CPU does).
__global__ void totals_kernel(const double* __restrict__ partial, int64_t chunks, double* __restrict__ totals) {
  double tv = 0, td = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    tv += partial[2 * c];
    td += partial[2 * c + 1];
  }
  totals[0] = tv;
  totals[1] = td;
}

template <class T>
void copy_to_device(T* device, const std::vector<T>& host, cudaStream_t s) {
  if (!host.empty())
    CK_CUDA_CHECK(cudaMemcpyAsync(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, s));
}

}  // namespace

void buffer_add(const Array& buffer, const Array& update, double weight, Stream stream) {
  with_inplace_pair(buffer, update, "buffer", "update", [&](auto* b, const auto* u) {
    using B = std::remove_pointer_t<decltype(b)>;
    if (buffer.size == 0) return;
    DeviceGuard guard(stream);
    axpy_kernel<<<grid_for(buffer.size, kThreads), kThreads, 0, cuda_stream(stream)>>>(b, u, acc_t<B>(weight),
                                                                                        buffer.size);
    check_launch();
  });
}

void fedasync_mix(const Array& x, const Array& x_new, double alpha, Stream stream) {
  with_inplace_pair(x, x_new, "x", "x_new", [&](auto* p, const auto* q) {
    using X = std::remove_pointer_t<decltype(p)>;
    if (x.size == 0) return;
    DeviceGuard guard(stream);
    mix_kernel<<<grid_for(x.size, kThreads), kThreads, 0, cuda_stream(stream)>>>(p, q, acc_t<X>(alpha), x.size);
    check_launch();
  });
}

void variance_corrected_mean(const Rows& rows, const std::vector<int64_t>& lengths, const std::vector<double>& weights,
                             double eps, const Array& out, Stream stream) {
  with_vcm_args(rows, lengths, weights, eps, out, [&](auto tag) {
    using T = typename decltype(tag)::type;
    std::vector<VcmTask> tasks;
    std::vector<int64_t> first;
    vcm_tasks(lengths, tasks, first);
    const int64_t nt = int64_t(tasks.size()), segments = int64_t(lengths.size()), n = rows.n;
    if (nt == 0) return;
    check(nt <= (int64_t(1) << 31) - 1, "X: too many chunks");
    DeviceGuard guard(stream);
    const cudaStream_t s = cuda_stream(stream);
    DeviceRows device_rows(rows, s);
    DeviceBuffer<VcmTask> d_tasks(size_t(nt), s);
    DeviceBuffer<int64_t> d_first(first.size(), s);
    DeviceBuffer<double> d_weights(weights.size(), s);
    DeviceBuffer<double> stats(size_t(nt * (n + 1) * 2), s);
    DeviceBuffer<Moments> merged(size_t(segments * (n + 1)), s);
    DeviceBuffer<double> params(size_t(3 * segments), s);
    copy_to_device(d_tasks.get(), tasks, s);
    copy_to_device(d_first.get(), first, s);
    copy_to_device(d_weights.get(), weights, s);
    T* o = static_cast<T*>(out.data);
    vcm_task_kernel<T><<<unsigned(nt), kThreads, 0, s>>>(device_rows.view<T>(), d_tasks.get(), d_weights.get(),
                                                         stats.get(), o);
    check_launch();
    vcm_segment_kernel<<<unsigned(segments), kThreads, 0, s>>>(d_tasks.get(), d_first.get(), stats.get(),
                                                               d_weights.get(), n, eps, merged.get(), params.get());
    check_launch();
    vcm_rescale_kernel<T><<<unsigned(nt), kThreads, 0, s>>>(d_tasks.get(), params.get(), o);
    check_launch();
  });
}

void column_moments(const Rows& rows, const Array& center, const Array& mean_out, const Array& std_out,
                    const Array& totals, Stream stream) {
  with_moment_args(rows, center, mean_out, std_out, totals, [&](auto tag, auto ctag) {
    using T = typename decltype(tag)::type;
    using C = typename decltype(ctag)::type;
    DeviceGuard guard(stream);
    const cudaStream_t s = cuda_stream(stream);
    const int64_t chunks = (rows.d + kMomentChunk - 1) / kMomentChunk;
    DeviceRows device_rows(rows, s);
    DeviceBuffer<double> partial(size_t(2 * chunks), s);
    if (chunks > 0) {
      moments_kernel<T, C><<<unsigned(chunks), kThreads, 0, s>>>(
          device_rows.view<T>(), center.size ? static_cast<const C*>(center.data) : nullptr,
          mean_out.size ? static_cast<T*>(mean_out.data) : nullptr,
          std_out.size ? static_cast<T*>(std_out.data) : nullptr, partial.get());
      check_launch();
    }
    totals_kernel<<<1, 1, 0, s>>>(partial.get(), chunks, static_cast<double*>(totals.data));
    check_launch();
  });
}

}  // namespace ck::CK_BACKEND
