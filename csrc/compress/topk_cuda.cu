// Magnitude top-k on the GPU: radix select with all state on the device (no host synchronisation).
//
// 1. Radix select: per digit (kDigitBits at a time, from the top), a histogram of the keys that match the
//    prefix found so far, then one block picks the digit that holds the k-th largest key. After the last
//    digit the state holds the k-th key T and its rank among the keys equal to T (ties: lower index first).
// 2. Selection: per chunk of the input, count keys > T and == T; one block turns the counts into output
//    offsets and per-chunk tie quotas; each chunk then writes its selected entries in index order, so the
//    output is ascending without a sort and identical to the CPU's. Integer atomics only (histograms).
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "../common/cuda_utils.cuh"
#include "api.h"
#include "args.h"
#include "topk.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int kDigitBits = 11;
constexpr int kBins = 1 << kDigitBits;
constexpr int kThreads = 256;
constexpr int kScanThreads = 1024;  // one thread per chunk in the offsets kernel
constexpr int kChunks = kScanThreads;

struct SelectState {
  uint64_t prefix;  // leading digits of the k-th largest key found so far
  int64_t rank;     // rank of the k-th key among the keys that share the prefix (1-based)
};

__global__ void init_state_kernel(SelectState* state, int64_t k) {
  state->prefix = 0;
  state->rank = k;
}

template <class T>
__global__ void histogram_kernel(const T* __restrict__ x, int64_t n, int shift, int width,
                                 const SelectState* __restrict__ state, uint32_t* __restrict__ hist) {
  __shared__ uint32_t local[kBins];
  for (int b = threadIdx.x; b < kBins; b += blockDim.x) local[b] = 0;
  __syncthreads();
  const uint64_t prefix = state->prefix;
  const int prefix_shift = shift + width;  // <= 63: keys have at most 63 significant bits
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t key = magnitude_key(x[i]);
    if ((key >> prefix_shift) == prefix) atomicAdd(&local[radix_digit(key, shift, width)], 1u);
  }
  __syncthreads();
  for (int b = threadIdx.x; b < kBins; b += blockDim.x)
    if (local[b]) atomicAdd(&hist[b], local[b]);
}

// One block: finds the digit whose bin holds the state's rank, counting from the largest digit down.
__global__ void select_digit_kernel(const uint32_t* __restrict__ hist, int width, SelectState* state) {
  constexpr int kPerThread = kBins / kThreads;
  using Scan = cub::BlockScan<int64_t, kThreads>;
  __shared__ typename Scan::TempStorage temp;
  const int bins = 1 << width;
  // Thread t owns digits top - t*kPerThread - j (j < kPerThread), so thread order is descending digits.
  const int top = bins - 1;
  int64_t counts[kPerThread];
  int64_t mine = 0;
  for (int j = 0; j < kPerThread; ++j) {
    const int digit = top - int(threadIdx.x) * kPerThread - j;
    counts[j] = digit >= 0 ? hist[digit] : 0;
    mine += counts[j];
  }
  int64_t above = 0;
  Scan(temp).ExclusiveSum(mine, above);
  const int64_t rank = state->rank;
  __syncthreads();
  if (above < rank && rank <= above + mine) {
    for (int j = 0; j < kPerThread; ++j) {
      if (above + counts[j] >= rank) {
        state->prefix = (state->prefix << width) | uint64_t(top - int(threadIdx.x) * kPerThread - j);
        state->rank = rank - above;
        return;
      }
      above += counts[j];
    }
  }
}

template <class T>
__global__ void count_kernel(const T* __restrict__ x, int64_t n, int64_t chunk, const SelectState* __restrict__ state,
                             int64_t* __restrict__ greater, int64_t* __restrict__ equal) {
  using Reduce = cub::BlockReduce<int64_t, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  const uint64_t threshold = state->prefix;
  const int64_t begin = int64_t(blockIdx.x) * chunk;
  const int64_t end = begin + chunk < n ? begin + chunk : n;
  int64_t gt = 0, eq = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const uint64_t key = magnitude_key(x[i]);
    gt += key > threshold;
    eq += key == threshold;
  }
  gt = Reduce(temp).Sum(gt);
  __syncthreads();
  eq = Reduce(temp).Sum(eq);
  if (threadIdx.x == 0) greater[blockIdx.x] = gt, equal[blockIdx.x] = eq;
}

// One block, one thread per chunk: output offset and tie quota of every chunk (ties go to lower chunks).
// The launch bound caps registers at 64 per thread: without it the two int64 block scans took more, and a
// 1024-thread launch failed with "too many resources requested" (seen on an H200).
__global__ void __launch_bounds__(kScanThreads)
    offsets_kernel(const int64_t* __restrict__ greater, const int64_t* __restrict__ equal,
                   const SelectState* __restrict__ state, int64_t* __restrict__ offset, int64_t* __restrict__ quota) {
  using Scan = cub::BlockScan<int64_t, kScanThreads>;
  __shared__ typename Scan::TempStorage temp;
  const int c = threadIdx.x;
  const int64_t eq = equal[c];
  int64_t eq_before = 0;
  Scan(temp).ExclusiveSum(eq, eq_before);
  __syncthreads();
  const int64_t left = state->rank - eq_before;
  const int64_t take = left <= 0 ? 0 : (left < eq ? left : eq);
  int64_t before = 0;
  Scan(temp).ExclusiveSum(greater[c] + take, before);
  offset[c] = before;
  quota[c] = take;
}

template <class T>
__global__ void write_kernel(const T* __restrict__ x, int64_t n, int64_t chunk, const SelectState* __restrict__ state,
                             const int64_t* __restrict__ offset, const int64_t* __restrict__ quota,
                             T* __restrict__ values, int32_t* __restrict__ indices) {
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage temp;
  const uint64_t threshold = state->prefix;
  const int64_t begin = int64_t(blockIdx.x) * chunk;
  const int64_t end = begin + chunk < n ? begin + chunk : n;
  int64_t out = offset[blockIdx.x];
  const int64_t ties = quota[blockIdx.x];
  int64_t ties_taken = 0;
  for (int64_t tile = begin; tile < end; tile += blockDim.x) {
    const int64_t i = tile + threadIdx.x;
    const bool valid = i < end;
    const T v = valid ? x[i] : T{};
    const uint64_t key = valid ? uint64_t(magnitude_key(v)) : 0;
    const int is_equal = valid && key == threshold;
    int tie_rank = 0, tile_ties = 0;
    Scan(temp).ExclusiveSum(is_equal, tie_rank, tile_ties);
    __syncthreads();
    const int selected = (valid && key > threshold) || (is_equal && ties_taken + tie_rank < ties);
    int position = 0, tile_selected = 0;
    Scan(temp).ExclusiveSum(selected, position, tile_selected);
    __syncthreads();
    if (selected) {
      values[out + position] = v;
      indices[out + position] = int32_t(i);
    }
    out += tile_selected;
    ties_taken += tile_ties;
  }
}

// Writes the ascending indices and the values of the top-k of x[0, n) (k >= 1) on the stream.
template <class T>
void topk_launch(const T* x, int64_t n, int64_t k, T* values, int32_t* indices, cudaStream_t stream) {
  DeviceBuffer<SelectState> state(1, stream);
  DeviceBuffer<uint32_t> hist(kBins, stream);
  init_state_kernel<<<1, 1, 0, stream>>>(state.get(), k);
  check_launch();
  const unsigned grid = grid_for(n, kThreads);
  for (int shift = key_bits<T>; shift > 0;) {
    const int width = shift < kDigitBits ? shift : kDigitBits;
    shift -= width;
    CK_CUDA_CHECK(cudaMemsetAsync(hist.get(), 0, kBins * sizeof(uint32_t), stream));
    histogram_kernel<<<grid, kThreads, 0, stream>>>(x, n, shift, width, state.get(), hist.get());
    check_launch();
    select_digit_kernel<<<1, kThreads, 0, stream>>>(hist.get(), width, state.get());
    check_launch();
  }
  const int64_t chunk = (n + kChunks - 1) / kChunks;
  DeviceBuffer<int64_t> counts(4 * kChunks, stream);  // greater, equal, offset, quota
  int64_t* greater = counts.get();
  int64_t* equal = greater + kChunks;
  int64_t* offset = equal + kChunks;
  int64_t* quota = offset + kChunks;
  count_kernel<<<kChunks, kThreads, 0, stream>>>(x, n, chunk, state.get(), greater, equal);
  check_launch();
  offsets_kernel<<<1, kScanThreads, 0, stream>>>(greater, equal, state.get(), offset, quota);
  check_launch();
  write_kernel<<<kChunks, kThreads, 0, stream>>>(x, n, chunk, state.get(), offset, quota, values, indices);
  check_launch();
}

template <class G, class R>
__global__ void add_kernel(const G* __restrict__ grad, R* __restrict__ residual, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    residual[i] = from_acc<R>(acc_t<R>(to_acc(residual[i])) + acc_t<R>(to_acc(grad[i])));
}

template <class R>
__global__ void zero_at_kernel(R* __restrict__ residual, const int32_t* __restrict__ indices, int64_t k) {
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < k; j += int64_t(gridDim.x) * blockDim.x)
    residual[indices[j]] = from_acc<R>(0);
}

}  // namespace

void topk(const Array& x, int64_t k, const Array& values, const Array& indices, Stream stream) {
  with_topk_args(x, k, values, indices, [&](const auto* data, auto* vals, int32_t* out) {
    if (k == 0) return;
    DeviceGuard guard(stream);
    topk_launch(data, x.size, k, vals, out, cuda_stream(stream));
  });
}

void ef_topk(const Array& grad, const Array& residual, int64_t k, const Array& values, const Array& indices,
             Stream stream) {
  with_ef_topk_args(grad, residual, k, values, indices, [&](const auto* g, auto* r, auto* vals, int32_t* out) {
    if (grad.size == 0) return;
    DeviceGuard guard(stream);
    const cudaStream_t s = cuda_stream(stream);
    add_kernel<<<grid_for(grad.size, kThreads, 1 << 16), kThreads, 0, s>>>(g, r, grad.size);
    check_launch();
    if (k == 0) return;
    topk_launch(static_cast<const std::remove_pointer_t<decltype(r)>*>(r), residual.size, k, vals, out, s);
    zero_at_kernel<<<grid_for(k, kThreads), kThreads, 0, s>>>(r, out, k);
    check_launch();
  });
}

}  // namespace ck::CK_BACKEND
