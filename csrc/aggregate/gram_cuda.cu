// gram on the GPU (gram.h). Deterministic without atomics.
//
// center (mode "mean"): one thread per coordinate, the finite entries summed in row order (a pass of its
//   own: fusing it would need every row of a coordinate in one block, which the multi-unit case lacks).
//
// gram: one pass over X, bound by DRAM bandwidth for small m, by the FMA pipes for m ~ 64.
//   - Register blocking: rows go in tiles of 8; a thread owns one pair of tiles (8 x 8 = 64 entries of G,
//     64 accumulators) and, per coordinate, reads 16 values from shared memory for 64 FMAs (at 2 values per FMA
//     the pass is bound by shared memory). Tiles of 8 rows waste little at m = 10 (16 rows
//     computed, 10 loaded); ptxas: ~155 registers (float accumulators), ~185 (float64), no spills (capping
//     float at 128 for two 256-thread blocks an SM spilled), blocks of 32..256 threads by m.
//   - A unit is the set of tile pairs one block owns. For m <= 80 (up to 10 tiles) one unit holds the
//     whole upper triangle (at most 55 pairs), so each coordinate of X is read from DRAM exactly once; for
//     more rows, tiles go in super-tiles of 8 and a unit is a super-tile pair (64 rows staged when both are
//     the same, else 128): at most 64 tile pairs a unit. Only the rows that exist are loaded (the others
//     are staged as zeros). The unit of a block comes from blockIdx.y (no pair table on the host).
//   - Each tile pair is split over S lanes of one warp (S a power of two, pairs x S <= 256), each lane
//     taking every S-th staged coordinate; so the split sums of a pair meet with a warp-shuffle butterfly
//     (fixed order; x + y == y + x bitwise, so every lane gets the same bits), no shared-memory reduction.
//   - Staging: K coordinates x all staged rows per step, converted to acc_t and centered once, stored
//     coordinate-major ([coordinate][row], row stride R + 4) so the 8 rows of a tile are two 16-byte loads.
//     A warp loads 8 coordinates x 4 rows at a time: 32-byte sectors from each row, and with the stride
//     = 4 (mod 8) words the 32 stores hit 32 distinct banks.
//   - Precision: a lane accumulates at most kFlushTerms = 256 products in acc_t (FMA), then the butterfly
//     (at most 5 levels) and a float64 add into the unit's partial (owned by one lane: no race); chunks
//     of coordinates (their count a function of d and m only, never of the GPU) are added in chunk order
//     by gram_reduce_kernel. So an entry's error is within (256 + 5) u |x_i - c| |x_k - c|, as on the CPU
//     (16 lanes x 256 terms + a 4-level tree), and the bits never depend on timing.
//   - Enough blocks for small d: about kTargetBlocks blocks (chunks x units), chunks of at least
//     kMinChunk coordinates, partial scratch under kMaxPartialBytes (beyond: fewer chunks).
//
// G comes back to the host (the host algorithms need it): the call waits for the stream. combine, the
// route's second pass, is in combine_cuda.cu.
#include <algorithm>

#include "../common/cuda_utils.cuh"
#include "gram.h"
#include "rows_cuda.cuh"

namespace ck::CK_BACKEND {
namespace {

constexpr int kTile = 8;               // rows per tile: a thread owns kTile x kTile entries of G
constexpr int kTileEntries = kTile * kTile;
constexpr int kSuper = 8;              // tiles per super-tile when one unit cannot hold all pairs
constexpr int kMaxUnitTiles = 10;      // up to 10 tiles (55 pairs), one unit holds the whole triangle
constexpr int kMaxThreads = 256;
constexpr int kFlushTerms = 256;       // products a lane accumulates in acc_t before the float64 add
constexpr int kStageBytes = 24576;     // staged tile per step (about; at least 32 coordinates)
constexpr int64_t kTargetBlocks = 2048;
constexpr int64_t kMinChunk = 512;
constexpr int64_t kMaxPartialBytes = int64_t(32) << 20;

// ---- geometry (host and device: the launch and the kernels agree on it)
struct GramPlan {
  int64_t m = 0, d = 0;
  int tiles = 0;       // ceil(m / kTile)
  int unit_tiles = 0;  // tiles per super-tile: all of them when they fit one unit, else kSuper
  int supers = 0;      // ceil(tiles / unit_tiles)
  int units = 0;       // supers (supers + 1) / 2 super-tile pairs
  int max_pairs = 0;   // tile pairs of the largest unit: the partial's stride
  int split = 0;       // S: lanes per tile pair (power of two, <= 32)
  int threads = 0;     // max_pairs * S rounded up to a warp
  int max_rows = 0;    // rows staged by the largest unit
  int stride = 0;      // shared-memory row stride (max_rows + 4)
  int cols = 0;        // K: coordinates staged per step (a multiple of 32)
  int steps_per_flush = 0;
  int64_t chunks = 0;
};

CK_HD int diag_pairs(int t) { return t * (t + 1) / 2; }

// (a, b), a <= b < t, in row-major order of the upper triangle; the inverse of diag_index.
CK_HD void diag_pair(int p, int t, int& a, int& b) {
  a = 0;
  while (p >= t - a) {
    p -= t - a;
    ++a;
  }
  b = a + p;
}

CK_HD int diag_index(int a, int b, int t) { return a * t - a * (a - 1) / 2 + (b - a); }

CK_HD int64_t chunk_begin(int64_t d, int64_t chunks, int64_t c) {
  return d / chunks * c + (c < d % chunks ? c : d % chunks);
}

// The first global row of staged row r of unit (ga, gb).
CK_HD int64_t staged_row(const GramPlan& p, int ga, int gb, int r) {
  const int span = p.unit_tiles * kTile;
  return r < span ? int64_t(ga) * span + r : int64_t(gb) * span + (r - span);
}

// The float64 partial of (chunk, unit, pair) starts here (kTileEntries entries, row-major a x b).
CK_HD int64_t partial_offset(const GramPlan& p, int64_t chunk, int unit, int pair) {
  return ((chunk * p.units + unit) * p.max_pairs + pair) * kTileEntries;
}

GramPlan gram_plan(int64_t m, int64_t d, int acc_bytes) {
  GramPlan p;
  p.m = m;
  p.d = d;
  p.tiles = int((m + kTile - 1) / kTile);
  p.unit_tiles = p.tiles <= kMaxUnitTiles ? p.tiles : kSuper;
  p.supers = (p.tiles + p.unit_tiles - 1) / p.unit_tiles;
  p.units = diag_pairs(p.supers);
  p.max_pairs = p.supers > 1 ? p.unit_tiles * p.unit_tiles : diag_pairs(p.unit_tiles);
  p.split = 32;
  while (p.split > 1 && p.max_pairs * p.split > kMaxThreads) p.split /= 2;
  p.threads = (p.max_pairs * p.split + 31) / 32 * 32;
  p.max_rows = (p.supers > 1 ? 2 : 1) * p.unit_tiles * kTile;
  p.stride = p.max_rows + 4;
  p.cols = std::max(32, kStageBytes / (p.stride * acc_bytes) / 32 * 32);
  p.steps_per_flush = std::max(1, kFlushTerms * p.split / p.cols);
  const int64_t by_blocks = (kTargetBlocks + p.units - 1) / p.units;
  const int64_t by_scratch = kMaxPartialBytes / (int64_t(p.units) * p.max_pairs * kTileEntries * 8);
  const int64_t by_size = (d + kMinChunk - 1) / kMinChunk;
  p.chunks = std::max<int64_t>(1, std::min({by_blocks, by_scratch, by_size}));
  return p;
}
// ---- end of the geometry

template <class T>
__global__ void center_kernel(RowView<T> rows, acc_t<T>* center) {
  using A = acc_t<T>;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < rows.d; j += int64_t(gridDim.x) * blockDim.x) {
    A sum = A(0), count = A(0);
#pragma unroll 8
    for (int64_t i = 0; i < rows.n; ++i) {  // unrolled: 8 rows' loads in flight, the adds in row order
      const A v = to_acc(rows.row(i)[j]);
      if (is_finite_value(v)) {
        sum += v;
        count += A(1);
      }
    }
    center[j] = count > A(0) ? sum / count : A(0);
  }
}

template <class T>
__global__ void vector_center_kernel(const T* c, int64_t d, acc_t<T>* center) {
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < d; j += int64_t(gridDim.x) * blockDim.x)
    center[j] = to_acc(c[j]);
}

// The 8 rows of a tile at one coordinate: 16-byte shared-memory loads (the tile starts 16-byte aligned).
__device__ __forceinline__ void load_tile(const float* s, float (&v)[kTile]) {
  const float4 lo = *reinterpret_cast<const float4*>(s), hi = *reinterpret_cast<const float4*>(s + 4);
  v[0] = lo.x; v[1] = lo.y; v[2] = lo.z; v[3] = lo.w;
  v[4] = hi.x; v[5] = hi.y; v[6] = hi.z; v[7] = hi.w;
}

__device__ __forceinline__ void load_tile(const double* s, double (&v)[kTile]) {
#pragma unroll
  for (int i = 0; i < kTile; i += 2) {
    const double2 x = *reinterpret_cast<const double2*>(s + i);
    v[i] = x.x;
    v[i + 1] = x.y;
  }
}

// tile[c * stride + r] <- x_row(r)[j0 + c] - center (acc_t) for the unit's rows; zero past m or `end`.
// A warp takes 8 coordinates x 4 rows: 32-byte pieces of 4 rows, and 32 distinct banks for the stores.
// A thread issues kStageBatch loads before its first store, so that many are in flight at once (one
// load, then its store, then the next: latency-bound, ~0.2 TB/s measured on an H100).
constexpr int kStageBatch = 8;

template <class T>
__device__ __forceinline__ void stage(const RowView<T>& rows, const acc_t<T>* center, const GramPlan& p, int ga,
                                      int gb, int nrows, int64_t j0, int64_t end, acc_t<T>* tile) {
  using A = acc_t<T>;
  const int total = nrows * p.cols, col_groups = p.cols / 8;
  for (int e0 = threadIdx.x; e0 < total; e0 += kStageBatch * blockDim.x) {
    A v[kStageBatch], c[kStageBatch];
    int at[kStageBatch];
#pragma unroll
    for (int u = 0; u < kStageBatch; ++u) {
      const int e = e0 + u * blockDim.x;
      const int q = e >> 5, lane = e & 31;
      const int r = (q / col_groups) * 4 + (lane >> 3), col = (q % col_groups) * 8 + (lane & 7);
      const int64_t row = staged_row(p, ga, gb, r), j = j0 + col;
      const bool load = e < total && row < p.m && j < end;
      v[u] = load ? to_acc(rows.row(row)[j]) : A(0);
      c[u] = load && center ? center[j] : A(0);
      at[u] = e < total ? col * p.stride + r : -1;
    }
#pragma unroll
    for (int u = 0; u < kStageBatch; ++u)
      if (at[u] >= 0) tile[at[u]] = v[u] - c[u];
  }
}

// Adds the S lanes' sums of each entry (butterfly: every lane ends with the same bits), then each lane
// adds its share of the entries into the unit's float64 partial (stores on the first flush).
template <class A>
__device__ __forceinline__ void flush(A (&acc)[kTileEntries], int split, int slice, bool owner, bool first,
                                      double* out) {
  for (int mask = 1; mask < split; mask <<= 1) {
#pragma unroll
    for (int e = 0; e < kTileEntries; ++e) acc[e] += __shfl_xor_sync(0xffffffffu, acc[e], mask);
  }
#pragma unroll
  for (int e = 0; e < kTileEntries; ++e) {
    if (owner && (e & (split - 1)) == slice) out[e] = first ? double(acc[e]) : out[e] + double(acc[e]);
    acc[e] = A(0);
  }
}

// partial[chunk][unit][pair][8 x 8] for blockIdx = (chunk, unit). Every thread reaches every
// __syncthreads (the loop bounds are block-uniform); lanes past the unit's pairs take part in the
// shuffles with zeros and write nothing.
template <class T>
__global__ void __launch_bounds__(kMaxThreads) gram_partial_kernel(RowView<T> rows, const acc_t<T>* center,
                                                                   GramPlan p, double* partial) {
  using A = acc_t<T>;
  extern __shared__ __align__(16) unsigned char smem[];
  A* tile = reinterpret_cast<A*>(smem);
  const int64_t chunk = blockIdx.x;
  const int unit = blockIdx.y;
  int ga, gb;
  diag_pair(unit, p.supers, ga, gb);
  const bool diag = ga == gb;
  const int pairs = diag ? diag_pairs(p.unit_tiles) : p.unit_tiles * p.unit_tiles;
  const int nrows = (diag ? 1 : 2) * p.unit_tiles * kTile;

  const int pair = threadIdx.x / p.split, slice = threadIdx.x % p.split;
  const bool owner = pair < pairs;
  int ta = 0, tb = 0;  // staged tiles of this thread's pair
  if (owner) {
    if (diag) {
      diag_pair(pair, p.unit_tiles, ta, tb);
    } else {
      ta = pair / p.unit_tiles;
      tb = p.unit_tiles + pair % p.unit_tiles;
    }
  }
  double* out = partial + partial_offset(p, chunk, unit, owner ? pair : 0);

  const int64_t begin = chunk_begin(p.d, p.chunks, chunk), end = chunk_begin(p.d, p.chunks, chunk + 1);
  A acc[kTileEntries];
#pragma unroll
  for (int e = 0; e < kTileEntries; ++e) acc[e] = A(0);
  bool first = true;
  int since = 0;
  for (int64_t j0 = begin; j0 < end; j0 += p.cols) {
    stage(rows, center, p, ga, gb, nrows, j0, end, tile);
    __syncthreads();
    if (owner) {
#pragma unroll 1
      for (int c = slice; c < p.cols; c += p.split) {
        A a[kTile], b[kTile];
        load_tile(tile + c * p.stride + ta * kTile, a);
        load_tile(tile + c * p.stride + tb * kTile, b);
#pragma unroll
        for (int i = 0; i < kTile; ++i)
#pragma unroll
          for (int k = 0; k < kTile; ++k) acc[i * kTile + k] = fma(a[i], b[k], acc[i * kTile + k]);
      }
    }
    __syncthreads();
    if (++since == p.steps_per_flush || j0 + p.cols >= end) {
      flush(acc, p.split, slice, owner, first, out);
      first = false;
      since = 0;
    }
  }
}

// G[i][k] = G[k][i] = the chunks' partials of entry (i, k), i <= k, added in chunk order.
__global__ void gram_reduce_kernel(const double* partial, GramPlan p, double* G) {
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= p.m * p.m) return;
  const int64_t i = e / p.m, k = e % p.m;
  if (k < i) return;
  const int ti = int(i / kTile), tk = int(k / kTile);
  const int ga = ti / p.unit_tiles, gb = tk / p.unit_tiles;
  const int la = ti % p.unit_tiles, lb = tk % p.unit_tiles;
  const int unit = diag_index(ga, gb, p.supers);
  const int pair = ga == gb ? diag_index(la, lb, p.unit_tiles) : la * p.unit_tiles + lb;
  const int q = int(i % kTile) * kTile + int(k % kTile);
  double sum = 0.0;
  for (int64_t c = 0; c < p.chunks; ++c) sum += partial[partial_offset(p, c, unit, pair) + q];
  G[i * p.m + k] = sum;
  G[k * p.m + i] = sum;
}

}  // namespace

void gram(const Rows& rows, GramCenter mode, const Array& center, const Array& G, Stream stream) {
  check_gram_args(rows, mode, center, G);
  double* host_G = static_cast<double*>(G.data);
  const int64_t m = rows.n, d = rows.d;
  if (d == 0) {
    std::fill(host_G, host_G + m * m, 0.0);
    return;
  }
  DeviceGuard guard(stream);
  const cudaStream_t s = cuda_stream(stream);
  dispatch_float(rows.dtype, "X", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const DeviceRows dev(rows, s);
    const RowView<T> view = dev.view<T>();
    DeviceBuffer<A> c(mode == GramCenter::zero ? 1 : size_t(d), s);
    if (mode == GramCenter::mean) {
      center_kernel<T><<<grid_for(d, 256), 256, 0, s>>>(view, c.get());
    } else if (mode == GramCenter::vector) {
      vector_center_kernel<T><<<grid_for(d, 256), 256, 0, s>>>(static_cast<const T*>(center.data), d, c.get());
    }
    check_launch();
    const GramPlan plan = gram_plan(m, d, int(sizeof(A)));
    DeviceBuffer<double> partial(size_t(plan.chunks * plan.units * plan.max_pairs * kTileEntries), s);
    const size_t smem = size_t(plan.cols) * plan.stride * sizeof(A);
    gram_partial_kernel<T><<<dim3(unsigned(plan.chunks), unsigned(plan.units)), plan.threads, smem, s>>>(
        view, mode == GramCenter::zero ? nullptr : c.get(), plan, partial.get());
    check_launch();
    DeviceBuffer<double> dev_G(size_t(m * m), s);
    gram_reduce_kernel<<<unsigned((m * m + 255) / 256), 256, 0, s>>>(partial.get(), plan, dev_G.get());
    check_launch();
    CK_CUDA_CHECK(cudaMemcpyAsync(host_G, dev_G.get(), size_t(m * m) * sizeof(double), cudaMemcpyDeviceToHost, s));
    CK_CUDA_CHECK(cudaStreamSynchronize(s));
  });
}

}  // namespace ck::CK_BACKEND
