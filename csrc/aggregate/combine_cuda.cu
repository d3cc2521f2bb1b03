// combine on the GPU (gram.h): out = W X. Deterministic without atomics.
#include <algorithm>
#include <optional>

#include "../common/cuda_utils.cuh"
#include "gram.h"
#include "rows_cuda.cuh"

namespace ck::CK_BACKEND {
namespace {

// A block owns a group of G output rows and, in each tile of kCombineThreads x C coordinates it visits,
// a thread owns C coordinates (kCombineThreads apart: coalesced loads and stores) of the G rows: G x C
// sums in registers while the workers go by, so each x_i[j] is loaded once per group of G outputs, not
// once per output (one thread per output element reads X r times: NNM's n x d output made that 2.5x
// slower than torch).
// G is 1, 8, 16 or 32 (16 for float64: registers) by r, the fewest groups without many idle sums; C keeps
// G x C at about 64 32-bit registers. Every output adds the workers in index order, one product and one
// add per term (acc += A(w) * x), so its bits do not depend on the grid, the groups or the chunks.
//   - The group's weights go to shared memory once per chunk of K workers (per chunk when n > K, else
//     once per block): A(w), and per worker a G-bit mask of w != 0.0 (one warp ballot, tested on the
//     float64). A worker with no non-zero weight in the group is never read (Krum's one-hot: one row).
//   - A zero weight must never touch a non-finite x (0 * NaN is NaN). Where the thread's C values of x_i
//     are finite, all G products are added, zero weights included: the same bits as skipping them, since
//     a sum that starts at +0 is never -0, and adding w * x = +-0 (w = +-0, x finite) changes nothing
//     (nor an Inf or NaN sum). Otherwise (rare) each term is tested against its mask bit.
//   - Workers go in batches of P: the next batch's P x C values are loaded before this batch's FMAs, so
//     32 bytes of acc_t (16 of 16-bit X) a thread stay in flight: 16 KB an SM at 2 blocks (G > 1, <= 128
//     registers), 32 KB at 4 (G = 1), about an H100 SM's share of DRAM bandwidth x latency (~25 B/ns x
//     ~700 ns). (P by X's size spills at 128 registers.)
//   - Blocks b = tile * groups + group: the groups of a tile run side by side, so only the first reads X
//     from DRAM and the others find it in L2; the outputs are streaming stores (written once, never
//     re-read here), to keep L2 for X. A block visits every (gridDim.x / groups)-th tile.
//   - W of at most kParamWeights entries goes by value in the kernel parameters (4 KB classic limit): no
//     device buffer, no host-to-device copy per call (Krum, multi-Krum, small NNM); larger W is copied.
constexpr int kCombineThreads = 256;
constexpr int kCombineStageBytes = 16384;  // staged A(w) per chunk of workers
constexpr int kCombineMaxWorkers = 512;    // workers per chunk at most
constexpr int64_t kCombineMaxBlocks = 4096;
constexpr int kParamWeights = 464;         // 3712 bytes: with the other arguments, under 4 KB

struct SmallWeights {
  double w[kParamWeights];
};

template <class A>
constexpr int combine_group(int64_t r) {
  return r <= 1 ? 1 : r <= 8 ? 8 : (r <= 16 || sizeof(A) == 8) ? 16 : 32;
}

// C: coordinates a thread owns (G x C sums: about 64 32-bit registers, 1 to 4 coordinates).
template <int G, class A>
constexpr int combine_cols() {
  const int c = 64 / (G * int(sizeof(A) / 4));
  return c < 1 ? 1 : c > 4 ? 4 : c;
}

// P: workers a batch (P x C loads in flight: 32 bytes of acc_t a thread).
template <int G, class A>
constexpr int combine_batch() {
  const int p = 32 / int(sizeof(A)) / combine_cols<G, A>();
  return p < 1 ? 1 : p;
}

// K: workers staged per chunk.
template <int G, class A>
constexpr int combine_workers() {
  const int k = kCombineStageBytes / (G * int(sizeof(A)));
  return k < kCombineMaxWorkers ? k : kCombineMaxWorkers;
}

__device__ __forceinline__ void store_streaming(float* p, float v) { __stcs(p, v); }
__device__ __forceinline__ void store_streaming(double* p, double v) { __stcs(p, v); }
__device__ __forceinline__ void store_streaming(float16* p, float16 v) {
  __stcs(reinterpret_cast<unsigned short*>(p), static_cast<unsigned short>(v.bits));
}
__device__ __forceinline__ void store_streaming(bfloat16* p, bfloat16 v) {
  __stcs(reinterpret_cast<unsigned short*>(p), static_cast<unsigned short>(v.bits));
}

// Stages workers [c0, c0 + K) of outputs [q0, q0 + G): weight[k][g] = A(W[q0 + g][c0 + k]) (0 past r or n),
// mask[k] bit g = (that weight != 0.0), row[k] = x_{c0 + k}. A thread takes (k, g) with g = lane % G, so
// a warp holds whole workers and one ballot gives their masks.
template <class T, int G, int K>
__device__ __forceinline__ void stage_weights(const RowView<T>& rows, const double* W, const SmallWeights& small,
                                              int64_t r, int64_t q0, int64_t c0, acc_t<T> (*weight)[G],
                                              uint32_t* mask, const T** row) {
  static_assert((K * G) % 32 == 0 && 32 % G == 0, "whole warps per staging round, whole workers per warp");
  using A = acc_t<T>;
  const int lane = threadIdx.x & 31;
#pragma unroll 1
  for (int e = threadIdx.x; e < K * G; e += kCombineThreads) {
    const int k = e / G, g = e % G;
    const int64_t i = c0 + k, q = q0 + g;
    double w = 0.0;
    if (i < rows.n && q < r) w = W ? W[q * rows.n + i] : small.w[q * rows.n + i];
    weight[k][g] = A(w);
    const uint32_t bits = __ballot_sync(0xffffffffu, w != 0.0);
    if (g == 0) {
      if constexpr (G == 32) {
        mask[k] = bits;
      } else {
        mask[k] = (bits >> lane) & ((1u << G) - 1u);
      }
      row[k] = i < rows.n ? rows.row(i) : nullptr;
    }
  }
}

// x[p][c] <- x_{k0 + p}[j[c]] for the staged workers k0 + p < count with a non-zero weight (m[p] != 0).
template <class T, int P, int C>
__device__ __forceinline__ void load_batch(const uint32_t* mask, const T* const* row, int k0, int count,
                                           const int64_t (&j)[C], const bool (&in)[C], acc_t<T> (&x)[P][C],
                                           uint32_t (&m)[P]) {
#pragma unroll
  for (int p = 0; p < P; ++p) {
    m[p] = k0 + p < count ? mask[k0 + p] : 0u;
    if (m[p] != 0) {
      const T* src = row[k0 + p];
#pragma unroll
      for (int c = 0; c < C; ++c) x[p][c] = in[c] ? to_acc(src[j[c]]) : acc_t<T>(0);
    }
  }
}

// acc[g][c] += w[g] * x[c] for the outputs g with a non-zero weight (bit g of m), in the same bits.
template <int G, int C, class A>
__device__ __forceinline__ void add_worker(A (&acc)[G][C], const A* w, uint32_t m, const A (&x)[C]) {
  bool finite = true;
#pragma unroll
  for (int c = 0; c < C; ++c) finite &= is_finite_value(x[c]);
  if (finite) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const A wg = w[g];
#pragma unroll
      for (int c = 0; c < C; ++c) acc[g][c] += wg * x[c];
    }
  } else {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      if ((m >> g) & 1u) {
        const A wg = w[g];
#pragma unroll
        for (int c = 0; c < C; ++c) acc[g][c] += wg * x[c];
      }
    }
  }
}

// out[q][j] (q in [q0, q0 + G), group blockIdx.x % groups) = sum_i W[q][i] x_i[j]; W is `W` on the device,
// or `small` when W is null.
template <class T, int G>
__global__ void __launch_bounds__(kCombineThreads, G == 1 ? 4 : 2)
    combine_kernel(RowView<T> rows, const double* W, SmallWeights small, int64_t r, int64_t groups, T* out) {
  using A = acc_t<T>;
  constexpr int C = combine_cols<G, A>(), P = combine_batch<G, A>(), K = combine_workers<G, A>();
  constexpr int64_t kSpan = int64_t(kCombineThreads) * C;
  __shared__ __align__(16) A weight[K][G];
  __shared__ uint32_t mask[K];
  __shared__ const T* row[K];
  const int64_t n = rows.n, d = rows.d;
  const int64_t q0 = int64_t(blockIdx.x % groups) * G;
  const int64_t tiles = (d + kSpan - 1) / kSpan, tile_step = int64_t(gridDim.x) / groups;
  const bool one_chunk = n <= K;
  if (one_chunk) {
    stage_weights<T, G, K>(rows, W, small, r, q0, 0, weight, mask, row);
    __syncthreads();
  }
  // Loop bounds are block-uniform: every thread reaches every __syncthreads.
  for (int64_t tile = blockIdx.x / groups; tile < tiles; tile += tile_step) {
    int64_t j[C];
    bool in[C];
#pragma unroll
    for (int c = 0; c < C; ++c) {
      j[c] = tile * kSpan + c * kCombineThreads + threadIdx.x;
      in[c] = j[c] < d;
    }
    A acc[G][C];
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
      for (int c = 0; c < C; ++c) acc[g][c] = A(0);
    for (int64_t c0 = 0; c0 < n; c0 += K) {
      if (!one_chunk) {
        __syncthreads();  // the previous chunk's readers are done
        stage_weights<T, G, K>(rows, W, small, r, q0, c0, weight, mask, row);
        __syncthreads();
      }
      const int count = int(n - c0 < K ? n - c0 : K);
      A next[P][C] = {};
      uint32_t next_mask[P];
      load_batch<T, P, C>(mask, row, 0, count, j, in, next, next_mask);
      for (int k0 = 0; k0 < count; k0 += P) {
        A x[P][C];
        uint32_t m[P];
#pragma unroll
        for (int p = 0; p < P; ++p) {
          m[p] = next_mask[p];
#pragma unroll
          for (int c = 0; c < C; ++c) x[p][c] = next[p][c];
        }
        if (k0 + P < count) load_batch<T, P, C>(mask, row, k0 + P, count, j, in, next, next_mask);
#pragma unroll
        for (int p = 0; p < P; ++p)
          if (m[p] != 0) add_worker<G, C, A>(acc, weight[k0 + p], m[p], x[p]);
      }
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
      if (q0 + g < r) {
#pragma unroll
        for (int c = 0; c < C; ++c)
          if (in[c]) store_streaming(out + (q0 + g) * d + j[c], from_acc<T>(acc[g][c]));
      }
    }
  }
}

template <class T, int G>
void launch_combine(const RowView<T>& view, const double* W, const SmallWeights& small, int64_t r, T* out,
                    cudaStream_t s) {
  constexpr int64_t span = int64_t(kCombineThreads) * combine_cols<G, acc_t<T>>();
  const int64_t groups = (r + G - 1) / G, tiles = (view.d + span - 1) / span;
  const int64_t tile_blocks = std::max<int64_t>(1, std::min(tiles, kCombineMaxBlocks / groups));
  combine_kernel<T, G><<<unsigned(groups * tile_blocks), kCombineThreads, 0, s>>>(view, W, small, r, groups, out);
  check_launch();
}

}  // namespace

void combine(const Rows& rows, const Array& W, int64_t r, const Array& out, Stream stream) {
  check_combine_args(rows, W, r, out);
  if (r * rows.d == 0) return;
  check(r <= int64_t(1) << 34, "W: at most 2^34 output rows on the GPU");  // groups of >= 16: a 2^30 grid
  DeviceGuard guard(stream);
  const cudaStream_t s = cuda_stream(stream);
  dispatch_float(rows.dtype, "X", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const DeviceRows dev(rows, s);
    SmallWeights small{};
    const double* dev_W = nullptr;
    std::optional<DeviceBuffer<double>> buffer;
    if (W.size <= kParamWeights) {
      std::copy_n(static_cast<const double*>(W.data), W.size, small.w);
    } else {
      // W is host memory: a pageable copy returns once staged, so the caller's array may go away after this
      buffer.emplace(size_t(W.size), s);
      CK_CUDA_CHECK(cudaMemcpyAsync(buffer->get(), W.data, size_t(W.size) * sizeof(double), cudaMemcpyHostToDevice, s));
      dev_W = buffer->get();
    }
    const RowView<T> view = dev.view<T>();
    T* dst = static_cast<T*>(out.data);
    const int group = combine_group<acc_t<T>>(r);
    if (group == 1) {
      launch_combine<T, 1>(view, dev_W, small, r, dst, s);
    } else if (group == 8) {
      launch_combine<T, 8>(view, dev_W, small, r, dst, s);
    } else if (group == 16) {
      launch_combine<T, 16>(view, dev_W, small, r, dst, s);
    } else if constexpr (sizeof(acc_t<T>) == 4) {
      launch_combine<T, 32>(view, dev_W, small, r, dst, s);
    }
  });
}

}  // namespace ck::CK_BACKEND
