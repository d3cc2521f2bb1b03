// MoE dispatch on the GPU, with no read-back to the host (the output sizes are known there).
//
// plan: (1) one thread per chunk of pairs counts its pairs per expert (hist[e][chunk]); (2) one block scans
// the counts into each chunk's first position per expert, and writes offsets; (3) each chunk's thread
// scatters its pair indices into the expert-sorted list, in order (a stable counting sort, no atomics);
// (4) one block per expert applies the capacity (the "score" policy finds the cap-th best (weight, pair)
// key by a bitwise radix select) and, with a block scan, writes its kept pairs' rows in token order;
// (5) the rows after offsets[E] become padding.
// permute / combine / pair_dots: a block per output row, threads along h; sums in acc_t in slot order.
#include <algorithm>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "../common/cuda_utils.cuh"
#include "dispatch.h"
#include "route.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int kThreads = 256;
constexpr int kScanThreads = 1024;  // the expert scan: one block (launch-bounded, so it always fits)
constexpr int64_t kChunk = 256;  // pairs per counting-sort chunk

// An unsigned key ordering weights ascending, NaN above everything (as key_greater), exact.
__device__ __forceinline__ uint64_t weight_key(float w) {
  if (w != w) return 0xffffffffull;
  if (w == 0.0f) w = 0.0f;  // -0 ties with +0, as on the CPU
  const uint32_t u = bit_cast<uint32_t>(w);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ uint64_t weight_key(double w) {
  if (w != w) return ~0ull;
  if (w == 0.0) w = 0.0;
  const uint64_t u = bit_cast<uint64_t>(w);
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

// (weight key, pair) as one 128-bit key, larger = better: a larger weight, then the lower pair index.
struct Key128 {
  uint64_t hi, lo;
};
__device__ __forceinline__ bool key_ge(Key128 a, Key128 b) { return a.hi > b.hi || (a.hi == b.hi && a.lo >= b.lo); }

template <class I>
__global__ void count_kernel(const I* __restrict__ ids, int64_t pairs, int64_t experts, int64_t chunks,
                             int64_t chunk, int64_t* __restrict__ hist) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < chunks; c += int64_t(gridDim.x) * blockDim.x) {
    const int64_t end = min(pairs, (c + 1) * chunk);
    for (int64_t i = c * chunk; i < end; ++i) {
      const I e = ids[i];
      if (e >= 0 && e < experts) ++hist[int64_t(e) * chunks + c];
    }
  }
}

__global__ void __launch_bounds__(kScanThreads)
    scan_kernel(PlanParams p, int64_t chunks, int64_t* __restrict__ hist, int64_t* __restrict__ start,
                int64_t* __restrict__ offsets) {
  const int64_t E = p.experts;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    int64_t sum = 0;
    for (int64_t c = 0; c < chunks; ++c) sum += hist[e * chunks + c];
    start[e + 1] = sum;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    start[0] = 0;
    offsets[0] = 0;
    for (int64_t e = 0; e < E; ++e) {
      const int64_t routed = start[e + 1];
      start[e + 1] = start[e] + routed;
      offsets[e + 1] = p.capacity >= 0 ? (e + 1) * p.region() : offsets[e] + (routed + p.align - 1) / p.align * p.align;
    }
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    int64_t sum = start[e];
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t n = hist[e * chunks + c];
      hist[e * chunks + c] = sum;
      sum += n;
    }
  }
}

template <class I>
__global__ void scatter_kernel(const I* __restrict__ ids, int64_t pairs, int64_t experts, int64_t chunks,
                               int64_t chunk, int64_t* __restrict__ hist, int32_t* __restrict__ sorted,
                               int32_t* __restrict__ row_of) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < chunks; c += int64_t(gridDim.x) * blockDim.x) {
    const int64_t end = min(pairs, (c + 1) * chunk);
    for (int64_t i = c * chunk; i < end; ++i) {
      const I e = ids[i];
      if (e >= 0 && e < experts) sorted[hist[int64_t(e) * chunks + c]++] = int32_t(i);
      else row_of[i] = -1;  // out of range: dropped
    }
  }
}

template <class W>
__global__ void place_kernel(PlanParams p, const W* __restrict__ weights, const int64_t* __restrict__ start,
                             const int32_t* __restrict__ sorted, const int64_t* __restrict__ offsets,
                             int64_t* __restrict__ counts, int32_t* __restrict__ row_of, int32_t* __restrict__ src_of,
                             int32_t* __restrict__ block_expert) {
  using Reduce = cub::BlockReduce<int64_t, kThreads>;
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Reduce::TempStorage reduce_temp;
  __shared__ typename Scan::TempStorage scan_temp;
  __shared__ int64_t shared_count;
  const int64_t e = blockIdx.x;
  const int32_t* list = sorted + start[e];
  const int64_t routed = start[e + 1] - start[e];
  const int64_t cap = p.capacity >= 0 ? min(routed, p.capacity) : routed;
  const bool by_score = p.by_score && routed > cap && cap > 0;
  auto key_of = [&](int32_t pair) { return Key128{weight_key(weights[pair]), ~uint64_t(uint32_t(pair))}; };
  Key128 threshold{0, 0};
  if (by_score) {  // the largest key t with at least cap keys >= t: the cap-th best
    for (int bit = 127; bit >= 0; --bit) {
      Key128 candidate = threshold;
      if (bit >= 64) candidate.hi |= 1ull << (bit - 64);
      else candidate.lo |= 1ull << bit;
      int64_t n = 0;
      for (int64_t j = threadIdx.x; j < routed; j += blockDim.x) n += key_ge(key_of(list[j]), candidate);
      const int64_t total = Reduce(reduce_temp).Sum(n);
      if (threadIdx.x == 0) shared_count = total;
      __syncthreads();
      if (shared_count >= cap) threshold = candidate;
      __syncthreads();
    }
  }
  const int64_t base = offsets[e];
  int64_t kept = 0;
  for (int64_t tile = 0; tile < routed; tile += blockDim.x) {
    const int64_t j = tile + threadIdx.x;
    int keep = 0;
    if (j < routed) keep = by_score ? key_ge(key_of(list[j]), threshold) : j < cap;
    int rank, tile_kept;
    Scan(scan_temp).ExclusiveSum(keep, rank, tile_kept);
    if (j < routed) {
      const int32_t pair = list[j];
      if (keep) {
        row_of[pair] = int32_t(base + kept + rank);
        src_of[base + kept + rank] = pair;
      } else {
        row_of[pair] = -1;
      }
    }
    kept += tile_kept;
    __syncthreads();
  }
  const int32_t sentinel = int32_t(p.tokens * p.k);
  for (int64_t r = base + kept + threadIdx.x; r < offsets[e + 1]; r += blockDim.x) src_of[r] = sentinel;
  if (p.align > 1)
    for (int64_t b = base / p.align + threadIdx.x; b < offsets[e + 1] / p.align; b += blockDim.x) block_expert[b] = int32_t(e);
  if (threadIdx.x == 0) counts[e] = kept;
}

__global__ void tail_kernel(PlanParams p, const int64_t* __restrict__ offsets, int32_t* __restrict__ src_of,
                            int32_t* __restrict__ block_expert) {
  const int64_t rows = p.rows(), used = offsets[p.experts];
  const int32_t sentinel = int32_t(p.tokens * p.k);
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t r = used + int64_t(blockIdx.x) * blockDim.x + threadIdx.x; r < rows; r += stride) src_of[r] = sentinel;
  if (p.align > 1)
    for (int64_t b = used / p.align + int64_t(blockIdx.x) * blockDim.x + threadIdx.x; b < rows / p.align; b += stride)
      block_expert[b] = -1;
}

// ---- row moves ----------------------------------------------------------------------------------------

template <class X, class W>
__global__ void permute_kernel(const X* __restrict__ x, const int32_t* __restrict__ src_of, const W* __restrict__ w,
                               MoveParams p, X* __restrict__ out) {
  using A = acc_t<X>;
  const int64_t pairs = p.tokens * p.k;
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const int64_t s = src_of[r];
    X* o = out + r * p.hidden;
    const bool pad = s < 0 || s >= pairs;  // the sentinel (the CPU raises for other values)
    const X* src = pad ? nullptr : x + s / p.k * p.hidden;
    const A scale = (!pad && w) ? A(w[s]) : A(1);
    for (int64_t i = threadIdx.x; i < p.hidden; i += blockDim.x) {
      if (pad) o[i] = from_acc<X>(A(0));
      else if (w) o[i] = from_acc<X>(A(to_acc(src[i])) * scale);
      else o[i] = src[i];
    }
  }
}

template <class X, class W>
__global__ void combine_kernel(const X* __restrict__ y, const int32_t* __restrict__ row_of, const W* __restrict__ w,
                               MoveParams p, X* __restrict__ out) {
  using A = acc_t<X>;
  for (int64_t t = blockIdx.x; t < p.tokens; t += gridDim.x) {
    for (int64_t i = threadIdx.x; i < p.hidden; i += blockDim.x) {
      A acc = A(0);
      for (int64_t j = 0; j < p.k; ++j) {
        const int32_t r = row_of[t * p.k + j];
        if (r < 0 || r >= p.rows) continue;
        const A v = A(to_acc(y[int64_t(r) * p.hidden + i]));
        acc += w ? A(w[t * p.k + j]) * v : v;
      }
      out[t * p.hidden + i] = from_acc<X>(acc);
    }
  }
}

template <class X, class W>
__global__ void dots_kernel(const X* __restrict__ a, const X* __restrict__ b, const int32_t* __restrict__ row_of,
                            MoveParams p, W* __restrict__ out) {
  using A = acc_t<X>;
  using Reduce = cub::BlockReduce<A, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  for (int64_t q = blockIdx.x; q < p.tokens * p.k; q += gridDim.x) {
    const int64_t t = q / p.k;
    const int32_t r = row_of[q];
    A part = A(0);
    if (r >= 0 && r < p.rows)
      for (int64_t i = threadIdx.x; i < p.hidden; i += blockDim.x)
        part += A(to_acc(a[t * p.hidden + i])) * A(to_acc(b[int64_t(r) * p.hidden + i]));
    const A total = Reduce(temp).Sum(part);
    if (threadIdx.x == 0) out[q] = W(total);
    __syncthreads();
  }
}

template <class F>
void dispatch_move(DType x, bool weighted, DType w, F&& f) {
  dispatch_float(x, "x", [&](auto xt) {
    if (!weighted) return f(xt, TypeTag<float>{});
    dispatch_weight(w, "weights", [&](auto wt) { f(xt, wt); });
  });
}

unsigned blocks_for(int64_t n) { return unsigned(n < 1 ? 1 : (n > 65535 ? 65535 : n)); }

}  // namespace

void moe_plan(const Array& ids, const PlanParams& p, const Array& weights, const Array& counts, const Array& offsets,
              const Array& row_of, const Array& src_of, const Array& block_expert, Stream stream) {
  check_plan_args(ids, p, weights, counts, offsets, row_of, src_of, block_expert);
  DeviceGuard guard(stream);
  cudaStream_t s = cuda_stream(stream);
  const int64_t pairs = p.tokens * p.k, E = p.experts;
  int64_t chunk = kChunk;
  while ((pairs + chunk - 1) / chunk * E > (int64_t(1) << 24) && chunk < pairs) chunk *= 2;  // bounded scratch
  const int64_t chunks = std::max<int64_t>(1, (pairs + chunk - 1) / chunk);
  DeviceBuffer<int64_t> hist(size_t(chunks * E), s), start(size_t(E + 1), s);
  DeviceBuffer<int32_t> sorted(size_t(std::max<int64_t>(pairs, 1)), s);
  CK_CUDA_CHECK(cudaMemsetAsync(hist.get(), 0, size_t(chunks * E) * sizeof(int64_t), s));
  dispatch_index(ids.dtype, "ids", [&](auto tag) {
    using I = typename decltype(tag)::type;
    const I* id = static_cast<const I*>(ids.data);
    count_kernel<<<grid_for(chunks, kThreads), kThreads, 0, s>>>(id, pairs, E, chunks, chunk, hist.get());
    scan_kernel<<<1, kScanThreads, 0, s>>>(p, chunks, hist.get(), start.get(), static_cast<int64_t*>(offsets.data));
    scatter_kernel<<<grid_for(chunks, kThreads), kThreads, 0, s>>>(id, pairs, E, chunks, chunk, hist.get(), sorted.get(),
                                                                   static_cast<int32_t*>(row_of.data));
  });
  auto place = [&](auto wt) {
    using W = typename decltype(wt)::type;
    place_kernel<W><<<unsigned(E), kThreads, 0, s>>>(
        p, p.by_score ? static_cast<const W*>(weights.data) : nullptr, start.get(), sorted.get(),
        static_cast<const int64_t*>(offsets.data), static_cast<int64_t*>(counts.data),
        static_cast<int32_t*>(row_of.data), static_cast<int32_t*>(src_of.data), static_cast<int32_t*>(block_expert.data));
  };
  if (p.by_score) dispatch_weight(weights.dtype, "weights", place);
  else place(TypeTag<float>{});
  tail_kernel<<<grid_for(p.rows(), kThreads), kThreads, 0, s>>>(p, static_cast<const int64_t*>(offsets.data),
                                                               static_cast<int32_t*>(src_of.data),
                                                               static_cast<int32_t*>(block_expert.data));
  check_launch();
}

void moe_permute(const Array& x, const Array& src_of, const Array& weights, const MoveParams& p, const Array& out,
                 Stream stream) {
  check_move_args(p, x, p.tokens, src_of, weights, out, p.rows);
  check(src_of.size == p.rows, "plan.src_of: expected rows elements");
  if (p.rows == 0 || p.hidden == 0) return;
  DeviceGuard guard(stream);
  dispatch_move(x.dtype, p.weighted, weights.dtype, [&](auto xt, auto wt) {
    using X = typename decltype(xt)::type;
    using W = typename decltype(wt)::type;
    permute_kernel<X, W><<<blocks_for(p.rows), kThreads, 0, cuda_stream(stream)>>>(
        static_cast<const X*>(x.data), static_cast<const int32_t*>(src_of.data),
        p.weighted ? static_cast<const W*>(weights.data) : nullptr, p, static_cast<X*>(out.data));
  });
  check_launch();
}

void moe_combine(const Array& y, const Array& row_of, const Array& weights, const MoveParams& p, const Array& out,
                 Stream stream) {
  check_move_args(p, y, p.rows, row_of, weights, out, p.tokens);
  check(row_of.size == p.tokens * p.k, "plan.row_of: expected T * k elements");
  if (p.tokens == 0 || p.hidden == 0) return;
  DeviceGuard guard(stream);
  dispatch_move(y.dtype, p.weighted, weights.dtype, [&](auto xt, auto wt) {
    using X = typename decltype(xt)::type;
    using W = typename decltype(wt)::type;
    combine_kernel<X, W><<<blocks_for(p.tokens), kThreads, 0, cuda_stream(stream)>>>(
        static_cast<const X*>(y.data), static_cast<const int32_t*>(row_of.data),
        p.weighted ? static_cast<const W*>(weights.data) : nullptr, p, static_cast<X*>(out.data));
  });
  check_launch();
}

void moe_pair_dots(const Array& a, const Array& b, const Array& row_of, const MoveParams& p, const Array& out,
                   Stream stream) {
  check(a.size == p.tokens * p.hidden && b.size == p.rows * p.hidden, "a, b: sizes do not match the plan");
  if (a.dtype != b.dtype) throw TypeError("b: expected a's dtype");
  check(row_of.size == p.tokens * p.k && out.size == p.tokens * p.k, "row_of, out: expected T * k elements");
  row_of.as<int32_t>("row_of");
  if (p.tokens == 0) return;
  DeviceGuard guard(stream);
  dispatch_float(a.dtype, "a", [&](auto xt) {
    dispatch_weight(out.dtype, "out", [&](auto wt) {
      using X = typename decltype(xt)::type;
      using W = typename decltype(wt)::type;
      dots_kernel<X, W><<<blocks_for(p.tokens * p.k), kThreads, 0, cuda_stream(stream)>>>(
          static_cast<const X*>(a.data), static_cast<const X*>(b.data), static_cast<const int32_t*>(row_of.data), p,
          static_cast<W*>(out.data));
    });
  });
  check_launch();
}

// On the GPU the two gradients are two launches on the same stream (each already one pass at bandwidth).
void moe_combine_backward(const Array& y, const Array& grad, const Array& row_of, const Array& src_of,
                          const Array& weights, const MoveParams& p, const Array& grad_y, const Array& grad_w,
                          Stream stream) {
  moe_combine_backward_two_passes(y, grad, row_of, src_of, weights, p, grad_y, grad_w, stream);
}

}  // namespace ck::CK_BACKEND
