// gram and combine on the CPU (gram.h). Cache blocking: a block of B coordinates of all m rows is
// converted (to acc_t, centered) into a per-thread scratch of m_pad x B that stays in L2 (fill_block; the
// tile loop of the block before has prefetched it, NextBlock), then every
// 4 x 4 tile of row pairs accumulates its 16 dot products in SIMD registers (GCC vector extensions: one
// 512-bit register a lane vector under the AVX-512 dispatch, emulated on SSE2 otherwise). A tile's 16
// lane vectors are added into per-thread lane partials (still one lane a coordinate class, so no
// horizontal work in the hot loop); every kFlushTerms coordinates per lane, and at the end of a chunk, the
// lanes are summed in a fixed order into the chunk's float64 partials.
#include <algorithm>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "../common/cpu_features.h"
#include "../common/parallel.h"
#include "combine_amx_cpu.h"
#include "gram.h"

namespace ck::CK_BACKEND {
namespace {

template <class A> struct Lanes;
template <> struct Lanes<float> {
  static constexpr int L = 16;
  typedef float vec __attribute__((vector_size(64), aligned(64)));
};
template <> struct Lanes<double> {
  static constexpr int L = 8;
  typedef double vec __attribute__((vector_size(64), aligned(64)));
};

constexpr int kTile = 4;
// Terms a lane accumulates in acc_t before its sum goes to float64 (the bound the tests derive from).
constexpr int64_t kFlushTerms = 256;

// Coordinates per block: the m_pad x B scratch is about 128 KiB (L2), B a power of two in [256, 2048 or
// 4096], so that the flush interval (kFlushTerms lane vectors) is a whole number of blocks.
template <class A>
int64_t block_size(int64_t m_pad) {
  const int64_t b = (int64_t(128) << 10) / int64_t(sizeof(A)) / m_pad;
  int64_t p = 256;
  while (p * 2 <= b && p * 2 <= kFlushTerms * Lanes<A>::L) p *= 2;
  return p;
}

// x[0, L) as one lane vector of acc_t.
template <class T>
CK_ALWAYS_INLINE typename Lanes<acc_t<T>>::vec load_lanes(const T* x) {
  using A = acc_t<T>;
  using V = typename Lanes<A>::vec;
  constexpr int L = Lanes<A>::L;
  V v;
  if constexpr (std::is_same_v<T, A>) {
    std::memcpy(&v, x, sizeof(V));
  } else {
    A tmp[L];
    for (int l = 0; l < L; ++l) tmp[l] = to_acc(x[l]);
    std::memcpy(&v, tmp, sizeof(V));
  }
  return v;
}

// Whether every lane of v is +-0 (a NaN lane is not).
template <class V>
CK_ALWAYS_INLINE bool all_zero(const V& v) {
  const auto zero = v == V{};
  bool all = true;
  for (int l = 0; l < int(sizeof(V) / sizeof(v[0])); ++l) all = all && zero[l];
  return all;
}

// scratch[i][0, len) <- x_i[j0, j0 + len) - c (acc_t); rows >= m and columns >= len are zero (up to B).
// Coordinates go by kFillVectors lane vectors at a time with every row inside: the mean center's sums stay
// in registers as independent chains (one chain would wait on the add latency every row), each row's
// piece is read twice from L1 (sum, then store centered), and the scratch is written once. The last
// partial group of coordinates goes one at a time, adding the rows in the same order.
constexpr int kFillVectors = 4;

template <class T>
CK_ALWAYS_INLINE void fill_block(const RowView<T>& rows, int64_t m, int64_t m_pad, GramCenter mode, const T* center,
                                 int64_t j0, int64_t len, int64_t B, acc_t<T>* scratch) {
  using A = acc_t<T>;
  using V = typename Lanes<A>::vec;
  constexpr int L = Lanes<A>::L, W = kFillVectors;
  const int64_t vec_len = len / (W * L) * (W * L);
  for (int64_t j = 0; j < vec_len; j += W * L) {
    V c[W] = {};
    if (mode == GramCenter::mean) {
      // Sum every entry; a finite total means every entry was finite (a NaN or Inf stays in the sum), so
      // it is the sum of the finite entries and the count is m. Otherwise count and sum again, masked.
      V sum[W] = {}, check = {};
      for (int64_t i = 0; i < m; ++i) {
        const T* x = rows.row(i) + j0 + j;
        for (int w = 0; w < W; ++w) sum[w] += load_lanes(x + w * L);
      }
      for (int w = 0; w < W; ++w) check += sum[w] - sum[w];
      if (all_zero(check)) {
        for (int w = 0; w < W; ++w) c[w] = sum[w] / A(m);
      } else {
        V count[W] = {};
        for (int w = 0; w < W; ++w) sum[w] = V{};
        for (int64_t i = 0; i < m; ++i) {
          const T* x = rows.row(i) + j0 + j;
          for (int w = 0; w < W; ++w) {
            const V v = load_lanes(x + w * L);
            const auto finite = (v - v) == V{};
            sum[w] = finite ? sum[w] + v : sum[w];
            count[w] = finite ? count[w] + A(1) : count[w];
          }
        }
        for (int w = 0; w < W; ++w) c[w] = count[w] > A(0) ? sum[w] / count[w] : V{};
      }
    } else if (mode == GramCenter::vector) {
      for (int w = 0; w < W; ++w) c[w] = load_lanes(center + j0 + j + w * L);
    }
    for (int64_t i = 0; i < m; ++i) {
      const T* x = rows.row(i) + j0 + j;
      A* s = scratch + i * B + j;
      for (int w = 0; w < W; ++w) {
        const V v = mode == GramCenter::zero ? load_lanes(x + w * L) : load_lanes(x + w * L) - c[w];
        std::memcpy(s + w * L, &v, sizeof(V));
      }
    }
  }
  for (int64_t j = vec_len; j < len; ++j) {
    A c = A(0);
    if (mode == GramCenter::mean) {
      A sum = A(0), count = A(0);
      for (int64_t i = 0; i < m; ++i) {
        const A v = to_acc(rows.row(i)[j0 + j]);
        if (is_finite_value(v)) sum += v, count += A(1);
      }
      c = count > A(0) ? sum / count : A(0);
    } else if (mode == GramCenter::vector) {
      c = to_acc(center[j0 + j]);
    }
    for (int64_t i = 0; i < m; ++i) {
      const A v = to_acc(rows.row(i)[j0 + j]);
      scratch[i * B + j] = mode == GramCenter::zero ? v : v - c;
    }
  }
  for (int64_t i = 0; i < m; ++i) std::fill(scratch + i * B + len, scratch + (i + 1) * B, A(0));
  for (int64_t i = m; i < m_pad; ++i) std::fill(scratch + i * B, scratch + (i + 1) * B, A(0));
}

// Software prefetch of the next block of coordinates into L2, one cache line a step, row after row. The
// tile loop takes one step per lane vector, so the next block arrives while this one is multiplied: tens
// of rows of a few KiB each are too many short streams for the hardware prefetcher, and without this the
// fill waits on memory. Into L2, not L1: the tiles' rows live in L1.
template <class T>
struct NextBlock {
  const RowView<T>& rows;
  int64_t m, j0, lines_per_row;  // lines_per_row = 0: nothing to fetch (the chunk ends here)
  int64_t row = 0, left = 0;
  const char* line = nullptr;

  NextBlock(const RowView<T>& rows, int64_t m, int64_t j0, int64_t len)
      : rows(rows), m(m), j0(j0), lines_per_row((std::max<int64_t>(len, 0) * int64_t(sizeof(T)) + 63) / 64) {}

  CK_ALWAYS_INLINE void step() {
    if (left == 0) {
      if (row == m || lines_per_row == 0) return;
      line = reinterpret_cast<const char*>(rows.row(row++) + j0);
      left = lines_per_row;
    }
    __builtin_prefetch(line, 0, 2);
    line += 64;
    --left;
  }
};

// lanes[t][a][b] += the block's lane-wise products of rows ib + a and kb + b (rows of stride B, the first
// `len` columns, a multiple of the lane count), for every tile t = (ib <= kb) of 4 x 4 rows.
template <class A, class T>
CK_ALWAYS_INLINE void block_tiles(const A* scratch, int64_t m_pad, int64_t B, int64_t len,
                                  typename Lanes<A>::vec* lanes, NextBlock<T>& next) {
  using V = typename Lanes<A>::vec;
  constexpr int L = Lanes<A>::L;
  for (int64_t ib = 0; ib < m_pad; ib += kTile) {
    for (int64_t kb = ib; kb < m_pad; kb += kTile, lanes += kTile * kTile) {
      V acc[kTile][kTile];
      for (int a = 0; a < kTile; ++a)
        for (int b = 0; b < kTile; ++b) acc[a][b] = V{};
      const A* xi = scratch + ib * B;
      const A* xk = scratch + kb * B;
      for (int64_t j = 0; j < len; j += L) {
        next.step();
        V u[kTile], v[kTile];
        for (int a = 0; a < kTile; ++a) std::memcpy(&u[a], xi + a * B + j, sizeof(V));
        for (int b = 0; b < kTile; ++b) std::memcpy(&v[b], xk + b * B + j, sizeof(V));
        for (int a = 0; a < kTile; ++a)
          for (int b = 0; b < kTile; ++b) acc[a][b] += u[a] * v[b];
      }
      for (int a = 0; a < kTile; ++a)
        for (int b = 0; b < kTile; ++b) lanes[a * kTile + b] += acc[a][b];
    }
  }
}

// partial[i][k] += the pairwise sum (a fixed order) of the lanes of every tile entry; the lanes restart.
template <class A>
CK_ALWAYS_INLINE void flush_lanes(typename Lanes<A>::vec* lanes, int64_t m_pad, double* partial) {
  using V = typename Lanes<A>::vec;
  constexpr int L = Lanes<A>::L;
  for (int64_t ib = 0; ib < m_pad; ib += kTile)
    for (int64_t kb = ib; kb < m_pad; kb += kTile, lanes += kTile * kTile)
      for (int a = 0; a < kTile; ++a)
        for (int b = 0; b < kTile; ++b) {
          A lane[L];
          std::memcpy(lane, &lanes[a * kTile + b], sizeof(V));
          for (int w = L / 2; w >= 1; w /= 2)
            for (int l = 0; l < w; ++l) lane[l] += lane[l + w];
          partial[(ib + a) * m_pad + kb + b] += double(lane[0]);
          lanes[a * kTile + b] = V{};
        }
}

template <class T>
CK_ALWAYS_INLINE void gram_chunk(const RowView<T>& rows, int64_t m, int64_t m_pad, GramCenter mode, const T* center,
                          int64_t j0, int64_t j1, int64_t B, double* partial) {
  using A = acc_t<T>;
  using V = typename Lanes<A>::vec;
  constexpr int L = Lanes<A>::L;
  const int64_t tiles = (m_pad / kTile) * (m_pad / kTile + 1) / 2;
  thread_local std::vector<A> buffer;
  const size_t lane_elems = size_t(tiles * kTile * kTile * L);
  const size_t need = size_t(m_pad * B) + lane_elems + 64;
  if (buffer.size() < need) buffer.resize(need);
  A* scratch = reinterpret_cast<A*>((reinterpret_cast<uintptr_t>(buffer.data()) + 63) & ~uintptr_t(63));
  V* lanes = reinterpret_cast<V*>(scratch + m_pad * B);  // m_pad * B is a multiple of 64 bytes
  std::fill(lanes, lanes + tiles * kTile * kTile, V{});
  const int64_t flush_every = kFlushTerms * L / B;  // blocks; B divides kFlushTerms * L
  int64_t pending = 0;
  for (int64_t j = j0; j < j1; j += B) {
    const int64_t len = std::min(B, j1 - j);
    fill_block(rows, m, m_pad, mode, center, j, len, B, scratch);
    NextBlock<T> next(rows, m, j + B, std::min(B, j1 - j - B));
    // a short last block: only the columns that hold data (rounded up to whole lane vectors, zero-padded)
    block_tiles(scratch, m_pad, B, std::min(B, (len + 63) / 64 * 64), lanes, next);
    if (++pending == flush_every) {
      flush_lanes<A>(lanes, m_pad, partial);
      pending = 0;
    }
  }
  if (pending) flush_lanes<A>(lanes, m_pad, partial);
}

template <class T>
void gram_range(const RowView<T>& rows, int64_t m, int64_t m_pad, GramCenter mode, const T* center, int64_t j0,
                int64_t j1, int64_t B, double* partial) {
  gram_chunk(rows, m, m_pad, mode, center, j0, j1, B, partial);
}

#ifdef CK_AVX512
template <class T>
CK_AVX512 void gram_range_avx512(const RowView<T>& rows, int64_t m, int64_t m_pad, GramCenter mode, const T* center,
                                 int64_t j0, int64_t j1, int64_t B, double* partial) {
  gram_chunk(rows, m, m_pad, mode, center, j0, j1, B, partial);
}
#endif

template <class T>
void gram_typed(const Rows& rows_in, GramCenter mode, const T* center, double* G) {
  using A = acc_t<T>;
  const RowView<T> rows = host_view<T>(rows_in);
  const int64_t m = rows_in.n, d = rows_in.d;
  const int64_t m_pad = (m + kTile - 1) / kTile * kTile;
  const int64_t B = block_size<A>(m_pad);
  std::fill(G, G + m * m, 0.0);
  if (d == 0) return;
  const int64_t chunks = gram_chunks(d, B);
  const size_t tile = size_t(m_pad * m_pad);
  thread_local std::vector<double> partials;  // owned by the calling thread, reused call after call
  partials.assign(size_t(chunks) * tile, 0.0);
  double* partial = partials.data();
#ifdef CK_AVX512
  const bool wide = has_avx512();
#endif
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (chunks > 1)
#endif
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t j0 = gram_chunk_begin(d, B, chunks, c), j1 = gram_chunk_begin(d, B, chunks, c + 1);
    double* p = partial + size_t(c) * tile;
#ifdef CK_AVX512
    if (wide) {
      gram_range_avx512(rows, m, m_pad, mode, center, j0, j1, B, p);
      continue;
    }
#endif
    gram_range(rows, m, m_pad, mode, center, j0, j1, B, p);
  }
  for (int64_t c = 0; c < chunks; ++c) {
    const double* p = partial + size_t(c) * tile;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t k = i; k < m; ++k) G[i * m + k] += p[i * m_pad + k];
  }
  for (int64_t i = 0; i < m; ++i)
    for (int64_t k = 0; k < i; ++k) G[i * m + k] = G[k * m + i];
}

// ---- combine --------------------------------------------------------------------------------------------

constexpr int64_t kCombineBlock = 2048;

// Register blocking: 8 output rows at a time, one SIMD vector of coordinates at a time, the 8 sums in
// registers while the workers go by (one load of x_i serves the 8 rows). A zero weight never touches a
// non-finite value (0 * NaN is NaN), and a worker with no non-zero weight in the group is never read
// (Krum's one-hot combine reads one row, not all of them). Every output adds the workers in index order,
// one rounding per term, whatever the blocking.
// Where a worker's block is all finite its zero weights are multiplied in rather than branched around
// (NNM's 0/1 weights): that gives the same bits, because a sum that starts at +0 is never -0, and adding
// w * x = +-0 to it changes nothing.
constexpr int kOut = 8;

// One output vector: the lane sums to X's dtype.
template <class T, class V>
CK_ALWAYS_INLINE void store_lanes(const V& acc, T* dst) {
  using A = acc_t<T>;
  constexpr int L = Lanes<A>::L;
  A lane[L];
  std::memcpy(lane, &acc, sizeof(V));
  for (int l = 0; l < L; ++l) dst[l] = from_acc<T>(lane[l]);
}

// finite[i] <- 1 if row i's block [j0, j0 + len) is all finite, else 2, for the listed rows not yet known
// (finite[i] == 0). v - v is +0 for a finite v and NaN otherwise, and a sum of +0 stays +0 (lane vectors,
// so it vectorises without reassociating anything). Eight rows are read side by side: eight sequential
// streams keep more cache misses in flight than one (this pass is what brings the block in from memory).
template <class T>
CK_ALWAYS_INLINE void find_finite(const RowView<T>& rows, const std::vector<int64_t>& active, int64_t j0, int64_t len,
                           uint8_t* finite) {
  using A = acc_t<T>;
  using V = typename Lanes<A>::vec;
  constexpr int L = Lanes<A>::L;
  constexpr int kStreams = 8;
  int64_t todo[kStreams];
  size_t next = 0;
  for (;;) {
    int count = 0;
    while (count < kStreams && next < active.size()) {
      const int64_t i = active[next++];
      if (finite[i] == 0) todo[count++] = i;
    }
    if (count == 0) return;
    V bad[kStreams] = {};
    const int64_t vec_len = len / L * L;
    for (int64_t l = 0; l < vec_len; l += L)
      for (int r = 0; r < count; ++r) {
        const V v = load_lanes(rows.row(todo[r]) + j0 + l);
        bad[r] += v - v;
      }
    for (int r = 0; r < count; ++r) {
      A lanes[L];
      std::memcpy(lanes, &bad[r], sizeof(V));
      A sum = A(0);
      for (int k = 0; k < L; ++k) sum += lanes[k];
      const T* x = rows.row(todo[r]) + j0;
      for (int64_t l = vec_len; l < len; ++l) sum += to_acc(x[l]) - to_acc(x[l]);
      finite[todo[r]] = sum == A(0) ? 1 : 2;
    }
  }
}


// The K (<= kOut) outputs of one group over the lane vectors [j0, j0 + vec_len): out[o][j] for o < K, two
// lane vectors (2K sums in registers) a step while there are two, so each weight serves two FMAs.
// Masked: some worker's block holds a non-finite value, so zero weights are skipped (branches); otherwise
// they are multiplied in (see above), which keeps the loop free of branches.
template <int K, bool Masked, class T>
CK_ALWAYS_INLINE void combine_vectors(const RowView<T>& rows, const std::vector<int64_t>& active, const acc_t<T>* weights,
                               const uint8_t* used, int64_t j0, int64_t vec_len, T* out, int64_t d) {
  using A = acc_t<T>;
  using V = typename Lanes<A>::vec;
  constexpr int L = Lanes<A>::L;
  int64_t j = j0;
  for (; j + 2 * L <= j0 + vec_len; j += 2 * L) {
    V lo[K], hi[K];
    for (int o = 0; o < K; ++o) lo[o] = hi[o] = V{};
    for (const int64_t i : active) {
      const T* x = rows.row(i) + j;
      const V a = load_lanes(x), b = load_lanes(x + L);
      const A* w = weights + i * kOut;
      const uint8_t* u = used + i * kOut;
      for (int o = 0; o < K; ++o)
        if (!Masked || u[o]) {
          lo[o] += w[o] * a;
          hi[o] += w[o] * b;
        }
    }
    for (int o = 0; o < K; ++o) {
      store_lanes(lo[o], out + o * d + j);
      store_lanes(hi[o], out + o * d + j + L);
    }
  }
  if (j < j0 + vec_len) {
    V acc[K];
    for (int o = 0; o < K; ++o) acc[o] = V{};
    for (const int64_t i : active) {
      const V a = load_lanes(rows.row(i) + j);
      const A* w = weights + i * kOut;
      const uint8_t* u = used + i * kOut;
      for (int o = 0; o < K; ++o)
        if (!Masked || u[o]) acc[o] += w[o] * a;
    }
    for (int o = 0; o < K; ++o) store_lanes(acc[o], out + o * d + j);
  }
}

template <int K, class T>
CK_ALWAYS_INLINE void combine_group(const RowView<T>& rows, const std::vector<int64_t>& active, const acc_t<T>* weights,
                             const uint8_t* used, bool all_finite, int64_t j0, int64_t vec_len, T* out, int64_t d) {
  if (all_finite)
    combine_vectors<K, false, T>(rows, active, weights, used, j0, vec_len, out, d);
  else
    combine_vectors<K, true, T>(rows, active, weights, used, j0, vec_len, out, d);
}

// The (output group, worker) pairs of W, prepared once per call: groups of kOut outputs; per group the
// workers with a non-zero weight in it (`active`), their weights (acc_t) and which are non-zero.
template <class A>
struct CombinePlan {
  int64_t groups = 0;
  std::vector<A> weights;        // [group][worker][kOut]
  std::vector<uint8_t> used;     // [group][worker][kOut]
  std::vector<std::vector<int64_t>> active;
  std::vector<int64_t> any;      // workers active in some group: the rows a block reads

  CombinePlan(const double* W, int64_t m, int64_t r)
      : groups((r + kOut - 1) / kOut), weights(size_t(groups * m * kOut)), used(weights.size()),
        active(size_t(groups)) {
    std::vector<uint8_t> read(size_t(m), 0);
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t i = 0; i < m; ++i) {
        bool nonzero = false;
        for (int o = 0; o < kOut; ++o) {
          const int64_t q = g * kOut + o;
          const double w = q < r ? W[q * m + i] : 0.0;
          weights[size_t((g * m + i) * kOut + o)] = A(w);
          used[size_t((g * m + i) * kOut + o)] = w != 0.0;
          nonzero = nonzero || w != 0.0;
        }
        if (nonzero) active[size_t(g)].push_back(i);
        read[size_t(i)] |= uint8_t(nonzero);
      }
    for (int64_t i = 0; i < m; ++i)
      if (read[size_t(i)]) any.push_back(i);
  }
};

// One block of coordinates [j0, j0 + len), all outputs. The whole lane vectors go by in chunks small
// enough for L1 (every group of outputs re-reads the chunk); the tail, one coordinate at a time.
template <class T>
CK_ALWAYS_INLINE void combine_block(const RowView<T>& rows, int64_t m, int64_t r, const CombinePlan<acc_t<T>>& plan,
                             int64_t j0, int64_t len, T* out, int64_t d, std::vector<uint8_t>& finite) {
  using A = acc_t<T>;
  constexpr int L = Lanes<A>::L;
  std::fill(finite.begin(), finite.end(), uint8_t(0));
  find_finite(rows, plan.any, j0, len, finite.data());
  bool all_finite = true;
  for (const int64_t i : plan.any) all_finite = all_finite && finite[size_t(i)] == 1;
  const int64_t vec_len = len / L * L;
  const int64_t per_row = std::max<int64_t>(1, int64_t(plan.any.size())) * int64_t(sizeof(T));
  const int64_t chunk = std::max<int64_t>(2 * L, (int64_t(24) << 10) / per_row / (2 * L) * (2 * L));
  for (int64_t c0 = 0; c0 < vec_len; c0 += chunk) {
    const int64_t c_len = std::min(chunk, vec_len - c0);
    for (int64_t g = 0; g < plan.groups; ++g) {
      const int outs = int(std::min<int64_t>(kOut, r - g * kOut));
      const A* weights = plan.weights.data() + g * m * kOut;
      const uint8_t* used = plan.used.data() + g * m * kOut;
      const std::vector<int64_t>& active = plan.active[size_t(g)];
      T* group_out = out + g * kOut * d;
      // a switch, not a generic lambda: a lambda is a function of its own, compiled without the AVX-512
      // target of the *_avx512 copy that inlines this code
      switch (outs) {
        case 1: combine_group<1>(rows, active, weights, used, all_finite, j0 + c0, c_len, group_out, d); break;
        case 2: combine_group<2>(rows, active, weights, used, all_finite, j0 + c0, c_len, group_out, d); break;
        case 3: combine_group<3>(rows, active, weights, used, all_finite, j0 + c0, c_len, group_out, d); break;
        case 4: combine_group<4>(rows, active, weights, used, all_finite, j0 + c0, c_len, group_out, d); break;
        case 5: combine_group<5>(rows, active, weights, used, all_finite, j0 + c0, c_len, group_out, d); break;
        case 6: combine_group<6>(rows, active, weights, used, all_finite, j0 + c0, c_len, group_out, d); break;
        case 7: combine_group<7>(rows, active, weights, used, all_finite, j0 + c0, c_len, group_out, d); break;
        default: combine_group<kOut>(rows, active, weights, used, all_finite, j0 + c0, c_len, group_out, d);
      }
    }
  }
  for (int64_t g = 0; g < plan.groups; ++g) {
    const int outs = int(std::min<int64_t>(kOut, r - g * kOut));
    const A* weights = plan.weights.data() + g * m * kOut;
    const uint8_t* used = plan.used.data() + g * m * kOut;
    for (int64_t j = vec_len; j < len; ++j)
      for (int o = 0; o < outs; ++o) {
        A acc = A(0);
        for (const int64_t i : plan.active[size_t(g)])
          if (used[i * kOut + o]) acc += weights[i * kOut + o] * to_acc(rows.row(i)[j0 + j]);
        out[(g * kOut + o) * d + j0 + j] = from_acc<T>(acc);
      }
  }
}

template <class T>
CK_ALWAYS_INLINE void combine_blocks(const RowView<T>& rows, int64_t m, const double* W, int64_t r, int64_t b0, int64_t b1,
                              T* out, int64_t d) {
  const CombinePlan<acc_t<T>> plan(W, m, r);
  std::vector<uint8_t> finite(static_cast<size_t>(m));
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t j0 = b * kCombineBlock;
    combine_block(rows, m, r, plan, j0, std::min(kCombineBlock, d - j0), out, d, finite);
  }
}

template <class T>
void combine_range(const RowView<T>& rows, int64_t m, const double* W, int64_t r, int64_t b0, int64_t b1, T* out,
                   int64_t d) {
  combine_blocks(rows, m, W, r, b0, b1, out, d);
}

#ifdef CK_AVX512
template <class T>
CK_AVX512 void combine_range_avx512(const RowView<T>& rows, int64_t m, const double* W, int64_t r, int64_t b0,
                                    int64_t b1, T* out, int64_t d) {
  combine_blocks(rows, m, W, r, b0, b1, out, d);
}
#endif

#ifdef CK_AMX
// The AVX-512 route for the coordinates [j, j + len) that the AMX route leaves (its plan made on first need).
CK_AMX void combine_piece_avx512(const RowView<bfloat16>& rows, int64_t m, const double* W, int64_t r,
                                 std::unique_ptr<CombinePlan<float>>& plan, int64_t j, int64_t len, bfloat16* out,
                                 int64_t d, std::vector<uint8_t>& finite) {
  if (!plan) plan = std::make_unique<CombinePlan<float>>(W, m, r);
  combine_block(rows, m, r, *plan, j, len, out, d, finite);
}

// The AMX route (combine_amx_cpu.h) over blocks [b0, b1): whole 32-coordinate units on the tile unit, staged
// kAmxStageUnits at a time; a unit holding a tiny value and the last partial unit go the AVX-512 route.
CK_AMX void combine_range_amx(const RowView<bfloat16>& rows, const AmxWeights& weights, const double* W, int64_t b0,
                              int64_t b1, bfloat16* out, int64_t d) {
  const int64_t m = weights.m, r = weights.r;
  const TileConfig config;
  _tile_loadconfig(&config);
  std::vector<uint32_t> stage(static_cast<size_t>(weights.m_pad / 2 * kAmxUnit * kAmxStageUnits));
  std::vector<uint8_t> finite(static_cast<size_t>(m));
  std::unique_ptr<CombinePlan<float>> plan;
  bool tiny[kAmxStageUnits], non_finite[kAmxStageUnits];
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t end = std::min(d, (b + 1) * kCombineBlock);
    for (int64_t j = b * kCombineBlock; j < end; j += kAmxUnit * kAmxStageUnits) {
      const int64_t units = std::min(kAmxStageUnits, (end - j) / kAmxUnit), staged_end = j + units * kAmxUnit;
      stage_block(rows, m, weights.m_pad, j, units, stage.data(), tiny, non_finite);
      const int64_t next_j = j + kAmxUnit * kAmxStageUnits < end ? j + kAmxUnit * kAmxStageUnits : (b + 1 < b1 ? end : d);
      NextStage next{&rows, m, next_j, std::min(kAmxStageUnits, (d - next_j) / kAmxUnit)};
      combine_staged(weights, stage.data(), units, tiny, j, out, d, next);
      for (int64_t u = 0; u < units; ++u) {
        if (tiny[u])
          combine_piece_avx512(rows, m, W, r, plan, j + u * kAmxUnit, kAmxUnit, out, d, finite);
        else if (non_finite[u])
          fix_non_finite(weights, rows, j + u * kAmxUnit, out, d);
      }
      if (staged_end < end && units < kAmxStageUnits)
        combine_piece_avx512(rows, m, W, r, plan, staged_end, end - staged_end, out, d, finite);
    }
  }
  _tile_release();
}
#endif

template <class T>
void combine_typed(const Rows& rows_in, const double* W, int64_t r, T* out) {
  const RowView<T> rows = host_view<T>(rows_in);
  const int64_t m = rows_in.n, d = rows_in.d;
  const int64_t blocks = (d + kCombineBlock - 1) / kCombineBlock;
#ifdef CK_AMX
  if constexpr (std::is_same_v<T, bfloat16>)
    if (r >= kAmxMinOutputs && has_amx_bf16()) {
      const AmxWeights weights(W, m, r);
      if (weights.usable)
        return parallel_for(blocks, 4, [&](int64_t b0, int64_t b1) {
          combine_range_amx(rows, weights, W, b0, b1, out, d);
        });
    }
#endif
#ifdef CK_AVX512
  const bool wide = has_avx512();
#endif
  parallel_for(blocks, 4, [&](int64_t b0, int64_t b1) {
#ifdef CK_AVX512
    if (wide) return combine_range_avx512(rows, m, W, r, b0, b1, out, d);
#endif
    combine_range(rows, m, W, r, b0, b1, out, d);
  });
}

}  // namespace

void gram(const Rows& rows, GramCenter mode, const Array& center, const Array& G, Stream) {
  check_gram_args(rows, mode, center, G);
  dispatch_float(rows.dtype, "X", [&](auto tag) {
    using T = typename decltype(tag)::type;
    gram_typed<T>(rows, mode, mode == GramCenter::vector ? static_cast<const T*>(center.data) : nullptr,
                  static_cast<double*>(G.data));
  });
}

void combine(const Rows& rows, const Array& W, int64_t r, const Array& out, Stream) {
  check_combine_args(rows, W, r, out);
  dispatch_float(rows.dtype, "X", [&](auto tag) {
    using T = typename decltype(tag)::type;
    combine_typed<T>(rows, static_cast<const double*>(W.data), r, static_cast<T*>(out.data));
  });
}

}  // namespace ck::CK_BACKEND
