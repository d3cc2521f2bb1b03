// Gossip mixing on the CPU. The columns of X are cut into tiles of TW = NV vectors; a thread takes a tile,
// converts its n x TW block into an accumulation buffer a, applies the rounds b = W a (swapping a and b),
// and writes the last one to Y. With 2 n TW accumulators per thread kept small (<= 512 KiB where n allows),
// the rounds run in L1/L2: X is read once and Y written once, whatever the number of rounds.
//
// The inner loops use GCC vector extensions (a vector of acc_t<T> of 64 bytes), compiled twice: for the
// baseline x86-64 and, chosen at run time, for AVX-512. Each output element accumulates over j (or the
// CSR slots) in ascending order, so the result does not depend on the thread count.
#pragma GCC diagnostic ignored "-Wpsabi"
#include <algorithm>
#include <cstring>
#include <cstdlib>
#include <memory>
#include <new>
#include <vector>

#include "../common/cpu_features.h"
#include "../common/parallel.h"
#include "csr.h"
#include "mix.h"

#ifndef CK_AVX512
#define CK_AVX512
#define CK_NO_AVX512_DISPATCH
#endif

namespace ck::CK_BACKEND {
namespace {

template <class A> struct VecOf;
template <> struct VecOf<float> { typedef float type __attribute__((vector_size(64))); };
template <> struct VecOf<double> { typedef double type __attribute__((vector_size(64))); };
template <class A> using vec_t = typename VecOf<A>::type;
template <class A> constexpr int kLanes = int(64 / sizeof(A));

constexpr int kRowBlock = 4;  // dense: rows computed together (RB x NV accumulators)

// a[j * NV + v] <- lanes of x[j, c0 : c0 + width] (zero beyond width)
template <class T, int NV>
CK_ALWAYS_INLINE void load_tile(const T* x, int64_t n, int64_t d, int64_t c0, int64_t width, vec_t<acc_t<T>>* a) {
  using A = acc_t<T>;
  constexpr int L = kLanes<A>;
  for (int64_t j = 0; j < n; ++j) {
    const T* row = x + j * d + c0;
    A* dst = reinterpret_cast<A*>(a + j * NV);
    if constexpr (std::is_same_v<T, A>) {
      std::memcpy(dst, row, size_t(width) * sizeof(A));
    } else {
      for (int64_t c = 0; c < width; ++c) dst[c] = to_acc(row[c]);
    }
    for (int64_t c = width; c < NV * L; ++c) dst[c] = A(0);
  }
}

template <class T, int NV>
CK_ALWAYS_INLINE void store_tile(const vec_t<acc_t<T>>* b, int64_t n, int64_t d, int64_t c0, int64_t width, T* y) {
  using A = acc_t<T>;
  for (int64_t i = 0; i < n; ++i) {
    const A* src = reinterpret_cast<const A*>(b + i * NV);
    T* row = y + i * d + c0;
    if constexpr (std::is_same_v<T, A>) {
      std::memcpy(row, src, size_t(width) * sizeof(A));
    } else {
      for (int64_t c = 0; c < width; ++c) row[c] = from_acc<T>(src[c]);
    }
  }
}

template <class A, int NV, int RB>
CK_ALWAYS_INLINE void dense_rows(const A* w, int64_t n, int64_t i0, const vec_t<A>* a, vec_t<A>* b) {
  using V = vec_t<A>;
  V acc[RB][NV];
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = V{} ;
  for (int64_t j = 0; j < n; ++j) {
    V aj[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) aj[v] = a[j * NV + v];
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) {
      const A wij = w[(i0 + r) * n + j];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] += wij * aj[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[(i0 + r) * NV + v] = acc[r][v];
}

template <class A, int NV>
CK_ALWAYS_INLINE void dense_round(const A* w, int64_t n, const vec_t<A>* a, vec_t<A>* b) {
  int64_t i = 0;
  for (; i + kRowBlock <= n; i += kRowBlock) dense_rows<A, NV, kRowBlock>(w, n, i, a, b);
  for (; i < n; ++i) dense_rows<A, NV, 1>(w, n, i, a, b);
}

template <class A, int NV, class I>
CK_ALWAYS_INLINE void csr_round(const int64_t* indptr, const I* indices, const A* weight, int64_t n, const vec_t<A>* a,
                         vec_t<A>* b) {
  using V = vec_t<A>;
  for (int64_t i = 0; i < n; ++i) {
    V acc[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[v] = V{};
    for (int64_t s = indptr[i]; s < indptr[i + 1]; ++s) {
      const A ws = weight[s];
      const vec_t<A>* aj = a + int64_t(indices[s]) * NV;
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[v] += ws * aj[v];
    }
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[i * NV + v] = acc[v];
  }
}

// One tile: load, rounds, store. `round(a, b)` applies W once.
template <class T, int NV, class Round>
CK_ALWAYS_INLINE void mix_tile(const T* x, T* y, int64_t n, int64_t d, int64_t rounds, int64_t c0, vec_t<acc_t<T>>* a,
                        vec_t<acc_t<T>>* b, Round&& round) {
  constexpr int64_t TW = NV * kLanes<acc_t<T>>;
  const int64_t width = std::min(TW, d - c0);
  load_tile<T, NV>(x, n, d, c0, width, a);
  for (int64_t r = 0; r < rounds; ++r) {
    round(a, b);
    std::swap(a, b);
  }
  store_tile<T, NV>(a, n, d, c0, width, y);
}

template <class T, int NV>
struct Kernels {
  using A = acc_t<T>;
  using V = vec_t<A>;

  static void dense_tiles_base(const T* x, const A* w, T* y, int64_t n, int64_t d, int64_t rounds, int64_t t0,
                               int64_t t1, V* a, V* b) {
    constexpr int64_t TW = NV * kLanes<A>;
    for (int64_t t = t0; t < t1; ++t)
      mix_tile<T, NV>(x, y, n, d, rounds, t * TW, a, b, [&](const V* in, V* out) __attribute__((always_inline)) { dense_round<A, NV>(w, n, in, out); });
  }
  CK_AVX512 static void dense_tiles_avx512(const T* x, const A* w, T* y, int64_t n, int64_t d, int64_t rounds,
                                           int64_t t0, int64_t t1, V* a, V* b) {
    constexpr int64_t TW = NV * kLanes<A>;
    for (int64_t t = t0; t < t1; ++t)
      mix_tile<T, NV>(x, y, n, d, rounds, t * TW, a, b, [&](const V* in, V* out) __attribute__((always_inline)) { dense_round<A, NV>(w, n, in, out); });
  }
  template <class I>
  static void csr_tiles_base(const T* x, const int64_t* indptr, const I* indices, const A* weight, T* y, int64_t n,
                             int64_t d, int64_t rounds, int64_t t0, int64_t t1, V* a, V* b) {
    constexpr int64_t TW = NV * kLanes<A>;
    for (int64_t t = t0; t < t1; ++t)
      mix_tile<T, NV>(x, y, n, d, rounds, t * TW, a, b,
                      [&](const V* in, V* out) __attribute__((always_inline)) { csr_round<A, NV, I>(indptr, indices, weight, n, in, out); });
  }
  template <class I>
  CK_AVX512 static void csr_tiles_avx512(const T* x, const int64_t* indptr, const I* indices, const A* weight, T* y,
                                         int64_t n, int64_t d, int64_t rounds, int64_t t0, int64_t t1, V* a, V* b) {
    constexpr int64_t TW = NV * kLanes<A>;
    for (int64_t t = t0; t < t1; ++t)
      mix_tile<T, NV>(x, y, n, d, rounds, t * TW, a, b,
                      [&](const V* in, V* out) __attribute__((always_inline)) { csr_round<A, NV, I>(indptr, indices, weight, n, in, out); });
  }
};

bool use_avx512() {
#ifdef CK_NO_AVX512_DISPATCH
  return false;
#else
  return has_avx512();
#endif
}

// Runs f(t0, t1, a, b) over the tiles [0, tiles) in parallel, with per-thread accumulators a, b of
// n * NV vectors each (one 64-byte aligned allocation per call, made before the parallel region so that
// a failure raises instead of terminating). Tiles are independent: any split gives the same result.
template <class V, int NV, class F>
void over_tiles(int64_t n, int64_t tiles, F&& f) {
  if (tiles <= 0) return;
  const int64_t per_thread = std::max<int64_t>(1, n) * NV;
  const int threads = int(std::min<int64_t>(max_threads(), tiles));
  V* buffer = static_cast<V*>(std::aligned_alloc(64, size_t(2 * per_thread * threads) * sizeof(V)));
  if (buffer == nullptr) throw std::bad_alloc();
  std::unique_ptr<V, void (*)(void*)> owner(buffer, std::free);
  if (threads <= 1) return f(int64_t(0), tiles, buffer, buffer + per_thread);
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t t0 = tiles / nt * t + std::min(t, tiles % nt), t1 = tiles / nt * (t + 1) + std::min(t + 1, tiles % nt);
    V* a = buffer + 2 * per_thread * t;
    if (t1 > t0) f(t0, t1, a, a + per_thread);
  }
#else
  f(int64_t(0), tiles, buffer, buffer + per_thread);
#endif
}

// The widest tile (in vectors: 4, 2 or 1) whose two accumulators stay within 512 KiB.
template <class A>
int tile_vectors(int64_t n) {
  const int64_t bytes_per_vector = 2 * std::max<int64_t>(1, n) * 64;
  if (4 * bytes_per_vector <= (512 << 10)) return 4;
  if (2 * bytes_per_vector <= (512 << 10)) return 2;
  return 1;
}

template <class T, int NV>
void run_dense(const T* x, const acc_t<T>* w, T* y, int64_t n, int64_t d, int64_t rounds) {
  using K = Kernels<T, NV>;
  constexpr int64_t TW = NV * kLanes<acc_t<T>>;
  const bool wide = use_avx512();
  over_tiles<typename K::V, NV>(n, (d + TW - 1) / TW, [&](int64_t t0, int64_t t1, auto* a, auto* b) {
    if (wide) K::dense_tiles_avx512(x, w, y, n, d, rounds, t0, t1, a, b);
    else K::dense_tiles_base(x, w, y, n, d, rounds, t0, t1, a, b);
  });
}

template <class T, int NV, class I>
void run_csr(const T* x, const int64_t* indptr, const I* indices, const acc_t<T>* weight, T* y, int64_t n, int64_t d,
             int64_t rounds) {
  using K = Kernels<T, NV>;
  constexpr int64_t TW = NV * kLanes<acc_t<T>>;
  const bool wide = use_avx512();
  over_tiles<typename K::V, NV>(n, (d + TW - 1) / TW, [&](int64_t t0, int64_t t1, auto* a, auto* b) {
    if (wide) K::template csr_tiles_avx512<I>(x, indptr, indices, weight, y, n, d, rounds, t0, t1, a, b);
    else K::template csr_tiles_base<I>(x, indptr, indices, weight, y, n, d, rounds, t0, t1, a, b);
  });
}

}  // namespace

void mix_dense(const Array& x, const Array& w, int64_t n, int64_t d, int64_t rounds, const Array& y, Stream) {
  graph::check_mix_dense(x, w, n, d, rounds, y);
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T* xp = static_cast<const T*>(x.data);
    T* yp = static_cast<T*>(y.data);
    const A* wp = static_cast<const A*>(w.data);
    switch (tile_vectors<A>(n)) {
      case 4: return run_dense<T, 4>(xp, wp, yp, n, d, rounds);
      case 2: return run_dense<T, 2>(xp, wp, yp, n, d, rounds);
      default: return run_dense<T, 1>(xp, wp, yp, n, d, rounds);
    }
  });
}

void mix_csr(const Array& x, const Array& indptr, const Array& indices, const Array& weight, int64_t n, int64_t d,
             int64_t rounds, const Array& y, Stream) {
  graph::check_mix_csr(x, indptr, indices, weight, n, d, rounds, y);
  const int64_t* ptr = static_cast<const int64_t*>(indptr.data);
  check(ptr[0] == 0 && ptr[n] == indices.size, "indptr: expected offsets from 0 to the number of slots");
  for (int64_t i = 0; i < n; ++i) check(ptr[i] <= ptr[i + 1], "indptr: expected non-decreasing offsets");
  dispatch_index(indices.dtype, "indices", [&](auto itag) {
    using I = typename decltype(itag)::type;
    const I* idx = static_cast<const I*>(indices.data);
    bool bad = false;
    for (int64_t s = 0; s < indices.size; ++s) bad |= uint64_t(int64_t(idx[s])) >= uint64_t(n);
    check(!bad, "indices: expected node indices in [0, " + std::to_string(n) + ")");
    dispatch_float(x.dtype, "x", [&](auto tag) {
      using T = typename decltype(tag)::type;
      using A = acc_t<T>;
      const T* xp = static_cast<const T*>(x.data);
      T* yp = static_cast<T*>(y.data);
      const A* wp = static_cast<const A*>(weight.data);
      switch (tile_vectors<A>(n)) {
        case 4: return run_csr<T, 4, I>(xp, ptr, idx, wp, yp, n, d, rounds);
        case 2: return run_csr<T, 2, I>(xp, ptr, idx, wp, yp, n, d, rounds);
        default: return run_csr<T, 1, I>(xp, ptr, idx, wp, yp, n, d, rounds);
      }
    });
  });
}

// One pass over X: per tile of columns, the column means and then the squared deviations (the tile is in
// cache for the second look). Tiles are grouped into a fixed number of chunks (independent of the thread
// count), summed in order.
void consensus_distance(const Array& x, int64_t n, int64_t d, const Array& out, Stream) {
  check(n >= 0 && d >= 0 && x.size == n * d, "x: expected n * d elements");
  if (out.dtype != DType::float64) throw TypeError("out: expected float64");
  check(out.size == 1, "out: expected 1 element");
  double* result = static_cast<double*>(out.data);
  if (n == 0 || d == 0) {
    *result = 0.0;
    return;
  }
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = static_cast<const T*>(x.data);
    constexpr int64_t TW = 64;
    const int64_t tiles = (d + TW - 1) / TW;
    const int chunks = int(std::min<int64_t>(tiles, 64));
    std::vector<double> partial(size_t(chunks), 0.0);
    parallel_chunks(tiles, chunks, [&](int c, int64_t t0, int64_t t1) {
      double total = 0.0;
      double mean[TW], sq[TW];
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t c0 = t * TW, width = std::min(TW, d - c0);
        for (int64_t k = 0; k < TW; ++k) mean[k] = 0.0, sq[k] = 0.0;
        for (int64_t i = 0; i < n; ++i) {
          const T* row = xp + i * d + c0;
          for (int64_t k = 0; k < width; ++k) mean[k] += double(to_acc(row[k]));
        }
        for (int64_t k = 0; k < width; ++k) mean[k] /= double(n);
        for (int64_t i = 0; i < n; ++i) {
          const T* row = xp + i * d + c0;
          for (int64_t k = 0; k < width; ++k) {
            const double dev = double(to_acc(row[k])) - mean[k];
            sq[k] += dev * dev;
          }
        }
        for (int64_t k = 0; k < width; ++k) total += sq[k];
      }
      partial[size_t(c)] = total;
    });
    double total = 0.0;
    for (double p : partial) total += p;
    *result = total / double(n);
  });
}

}  // namespace ck::CK_BACKEND
