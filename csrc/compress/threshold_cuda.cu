// Threshold selection on the GPU: one block per chunk (the chunks parallel_chunks would make). A count
// kernel writes each chunk's count; the write kernel sums the counts of the chunks before its own (its
// offset), then walks its chunk in tiles of blockDim elements, placing each passing entry with a block-wide
// exclusive scan, so the output is ascending, as on the CPU. No atomics.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <string>

#include "../common/cuda_utils.cuh"
#include "threshold.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int kThreads = 256;

__device__ int64_t chunk_start(int64_t n, int64_t chunks, int64_t c) {
  return n / chunks * c + min(c, n % chunks);
}

template <class T>
__global__ void count_kernel(const T* __restrict__ x, int64_t n, key_t<T> min_key, int64_t* __restrict__ counts) {
  using Reduce = cub::BlockReduce<int64_t, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  const int64_t c = blockIdx.x;
  const int64_t begin = chunk_start(n, gridDim.x, c), end = chunk_start(n, gridDim.x, c + 1);
  int64_t count = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) count += above_threshold(x[i], min_key);
  const int64_t total = Reduce(temp).Sum(count);
  if (threadIdx.x == 0) counts[c] = total;
}

template <class T>
__global__ void write_kernel(const T* __restrict__ x, int64_t n, key_t<T> min_key, const int64_t* __restrict__ counts,
                             int64_t total, T* __restrict__ values, int32_t* __restrict__ indices) {
  using Reduce = cub::BlockReduce<int64_t, kThreads>;
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Reduce::TempStorage reduce_temp;
  __shared__ typename Scan::TempStorage scan_temp;
  __shared__ int64_t base;
  const int64_t c = blockIdx.x;
  int64_t before = 0;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) before += counts[j];
  const int64_t offset = Reduce(reduce_temp).Sum(before);
  if (threadIdx.x == 0) base = offset;
  __syncthreads();
  const int64_t stop = min(total, base + counts[c]);  // never past this chunk's share or the output
  const int64_t begin = chunk_start(n, gridDim.x, c), end = chunk_start(n, gridDim.x, c + 1);
  int64_t o = base;
  for (int64_t tile = begin; tile < end; tile += blockDim.x) {
    const int64_t i = tile + threadIdx.x;
    const int pass = i < end && above_threshold(x[i], min_key);
    int position, passed;
    Scan(scan_temp).ExclusiveSum(pass, position, passed);
    if (pass && o + position < stop) {
      values[o + position] = x[i];
      indices[o + position] = int32_t(i);
    }
    o += passed;
    __syncthreads();  // scan_temp is reused by the next tile
  }
}

}  // namespace

void threshold_count(const Array& x, double v, const Array& counts, Stream stream) {
  with_threshold_args(x, v, counts, [&](auto tag) {
    using T = typename decltype(tag)::type;
    check(counts.size <= (int64_t(1) << 31) - 1, "counts: too many chunks");
    DeviceGuard guard(stream);
    count_kernel<T><<<unsigned(counts.size), kThreads, 0, cuda_stream(stream)>>>(
        static_cast<const T*>(x.data), x.size, threshold_key<T>(v), static_cast<int64_t*>(counts.data));
    check_launch();
  });
}

void threshold_write(const Array& x, double v, const Array& counts, const Array& values, const Array& indices,
                     Stream stream) {
  with_threshold_args(x, v, counts, [&](auto tag) {
    using T = typename decltype(tag)::type;
    check(values.size == indices.size, "values, indices: expected the same number of elements");
    T* vals = values.as<T>("values");
    int32_t* idx = indices.as<int32_t>("indices");
    DeviceGuard guard(stream);
    write_kernel<T><<<unsigned(counts.size), kThreads, 0, cuda_stream(stream)>>>(
        static_cast<const T*>(x.data), x.size, threshold_key<T>(v), static_cast<const int64_t*>(counts.data),
        indices.size, vals, idx);
    check_launch();
  });
}

}  // namespace ck::CK_BACKEND
