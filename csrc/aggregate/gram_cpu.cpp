// gram and combine on the CPU (gram.h). Cache blocking: a block of B coordinates of all m rows is
// converted (to acc_t, centered) into a per-thread scratch of m_pad x B that stays in L2, then every
// 4 x 4 tile of row pairs accumulates its 16 dot products in SIMD registers (GCC vector extensions: one
// 512-bit register a lane vector under the AVX-512 dispatch, emulated on SSE2 otherwise). At the end of
// the block the lanes are summed in a fixed order into the chunk's float64 partials.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../common/cpu_features.h"
#include "../common/parallel.h"
#include "gram.h"

namespace ck::CK_BACKEND {
namespace {

#define CK_INLINE inline __attribute__((always_inline))

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

// Coordinates per block: the m_pad x B scratch is about 128 KiB (L2), B a multiple of 64 in [256, 4096].
template <class A>
int64_t block_size(int64_t m_pad) {
  int64_t b = (int64_t(128) << 10) / int64_t(sizeof(A)) / m_pad;
  b = b / 64 * 64;
  return std::clamp<int64_t>(b, 256, 4096);
}

// scratch[i][0, len) <- x_i[j0, j0 + len) - c (acc_t); rows >= m and columns >= len are zero (up to B).
template <class T>
CK_INLINE void fill_block(const RowView<T>& rows, int64_t m, int64_t m_pad, GramCenter mode, const T* center,
                          int64_t j0, int64_t len, int64_t B, acc_t<T>* scratch, acc_t<T>* csum, acc_t<T>* ccount) {
  using A = acc_t<T>;
  const bool mean = mode == GramCenter::mean;
  if (mean) {
    std::fill(csum, csum + len, A(0));
    std::fill(ccount, ccount + len, A(0));
  }
  for (int64_t i = 0; i < m; ++i) {
    const T* x = rows.row(i) + j0;
    A* s = scratch + i * B;
    if (mean) {  // convert and sum the finite entries in one sweep
      for (int64_t j = 0; j < len; ++j) {
        const A v = to_acc(x[j]);
        const bool fin = is_finite_value(v);
        s[j] = v;
        csum[j] += fin ? v : A(0);
        ccount[j] += fin ? A(1) : A(0);
      }
    } else {
      for (int64_t j = 0; j < len; ++j) s[j] = to_acc(x[j]);
    }
    for (int64_t j = len; j < B; ++j) s[j] = A(0);
  }
  for (int64_t i = m; i < m_pad; ++i) std::fill(scratch + i * B, scratch + (i + 1) * B, A(0));
  if (mode == GramCenter::zero) return;
  if (mode == GramCenter::vector) {
    for (int64_t j = 0; j < len; ++j) csum[j] = to_acc(center[j0 + j]);
  } else {
    for (int64_t j = 0; j < len; ++j) csum[j] = ccount[j] > A(0) ? csum[j] / ccount[j] : A(0);
  }
  for (int64_t i = 0; i < m; ++i) {
    A* s = scratch + i * B;
    for (int64_t j = 0; j < len; ++j) s[j] -= csum[j];
  }
}

// partial[i][k] += the block's dot products of rows i and k (rows of stride B, the first `len` columns, a
// multiple of the lane count), for every tile (ib <= kb) of 4 x 4 rows.
template <class A>
CK_INLINE void block_tiles(const A* scratch, int64_t m_pad, int64_t B, int64_t len, double* partial) {
  using V = typename Lanes<A>::vec;
  constexpr int L = Lanes<A>::L;
  for (int64_t ib = 0; ib < m_pad; ib += kTile) {
    for (int64_t kb = ib; kb < m_pad; kb += kTile) {
      V acc[kTile][kTile];
      for (int a = 0; a < kTile; ++a)
        for (int b = 0; b < kTile; ++b) acc[a][b] = V{};
      const A* xi = scratch + ib * B;
      const A* xk = scratch + kb * B;
      for (int64_t j = 0; j < len; j += L) {
        V u[kTile], v[kTile];
        for (int a = 0; a < kTile; ++a) std::memcpy(&u[a], xi + a * B + j, sizeof(V));
        for (int b = 0; b < kTile; ++b) std::memcpy(&v[b], xk + b * B + j, sizeof(V));
        for (int a = 0; a < kTile; ++a)
          for (int b = 0; b < kTile; ++b) acc[a][b] += u[a] * v[b];
      }
      for (int a = 0; a < kTile; ++a)
        for (int b = 0; b < kTile; ++b) {
          A lane[L];
          std::memcpy(lane, &acc[a][b], sizeof(V));
          // pairwise lane sum in a fixed order
          for (int w = L / 2; w >= 1; w /= 2)
            for (int l = 0; l < w; ++l) lane[l] += lane[l + w];
          partial[(ib + a) * m_pad + kb + b] += double(lane[0]);
        }
    }
  }
}

template <class T>
CK_INLINE void gram_chunk(const RowView<T>& rows, int64_t m, int64_t m_pad, GramCenter mode, const T* center,
                          int64_t j0, int64_t j1, int64_t B, double* partial) {
  using A = acc_t<T>;
  thread_local std::vector<A> buffer;
  const size_t need = size_t(m_pad * B + 2 * B + 64);
  if (buffer.size() < need) buffer.resize(need);
  A* scratch = reinterpret_cast<A*>((reinterpret_cast<uintptr_t>(buffer.data()) + 63) & ~uintptr_t(63));
  A* csum = scratch + m_pad * B;
  A* ccount = csum + B;
  for (int64_t j = j0; j < j1; j += B) {
    const int64_t len = std::min(B, j1 - j);
    fill_block(rows, m, m_pad, mode, center, j, len, B, scratch, csum, ccount);
    // a short last block: only the columns that hold data (rounded up to whole lane vectors, zero-padded)
    block_tiles<A>(scratch, m_pad, B, std::min(B, (len + 63) / 64 * 64), partial);
  }
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
// registers while the workers go by (one load of x_i serves the 8 rows). A zero weight never touches its
// row (0 * NaN is NaN): the (output, worker) pairs with a non-zero weight are listed once per group. Every
// output adds the workers in index order, one rounding per term, whatever the blocking.
template <class T>
CK_INLINE void combine_block(const RowView<T>& rows, int64_t m, const double* W, int64_t r, int64_t j0, int64_t len,
                             T* out, int64_t d, std::vector<acc_t<T>>& weights, std::vector<uint8_t>& used) {
  using A = acc_t<T>;
  using V = typename Lanes<A>::vec;
  constexpr int L = Lanes<A>::L;
  constexpr int kOut = 8;
  for (int64_t q0 = 0; q0 < r; q0 += kOut) {
    const int outs = int(std::min<int64_t>(kOut, r - q0));
    for (int64_t i = 0; i < m; ++i)
      for (int o = 0; o < kOut; ++o) {
        const double w = o < outs ? W[(q0 + o) * m + i] : 0.0;
        weights[size_t(i * kOut + o)] = A(w);
        used[size_t(i * kOut + o)] = w != 0.0;
      }
    int64_t j = 0;
    for (; j + L <= len; j += L) {
      V acc[kOut];
      for (int o = 0; o < kOut; ++o) acc[o] = V{};
      for (int64_t i = 0; i < m; ++i) {
        const T* x = rows.row(i) + j0 + j;
        V v;
        if constexpr (std::is_same_v<T, A>) {
          std::memcpy(&v, x, sizeof(V));
        } else {
          A tmp[L];
          for (int l = 0; l < L; ++l) tmp[l] = to_acc(x[l]);
          std::memcpy(&v, tmp, sizeof(V));
        }
        const A* w = weights.data() + i * kOut;
        const uint8_t* u = used.data() + i * kOut;
        for (int o = 0; o < kOut; ++o)
          if (u[o]) acc[o] += w[o] * v;
      }
      for (int o = 0; o < outs; ++o) {
        A lane[L];
        std::memcpy(lane, &acc[o], sizeof(V));
        T* dst = out + (q0 + o) * d + j0 + j;
        for (int l = 0; l < L; ++l) dst[l] = from_acc<T>(lane[l]);
      }
    }
    for (; j < len; ++j) {  // the tail, one coordinate at a time, same order
      for (int o = 0; o < outs; ++o) {
        A acc = A(0);
        for (int64_t i = 0; i < m; ++i)
          if (used[size_t(i * kOut + o)]) acc += weights[size_t(i * kOut + o)] * to_acc(rows.row(i)[j0 + j]);
        out[(q0 + o) * d + j0 + j] = from_acc<T>(acc);
      }
    }
  }
}

template <class T>
CK_INLINE void combine_blocks(const RowView<T>& rows, int64_t m, const double* W, int64_t r, int64_t b0, int64_t b1,
                              T* out, int64_t d) {
  std::vector<acc_t<T>> weights(static_cast<size_t>(m * 8));
  std::vector<uint8_t> used(static_cast<size_t>(m * 8));
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t j0 = b * kCombineBlock;
    combine_block(rows, m, W, r, j0, std::min(kCombineBlock, d - j0), out, d, weights, used);
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

template <class T>
void combine_typed(const Rows& rows_in, const double* W, int64_t r, T* out) {
  const RowView<T> rows = host_view<T>(rows_in);
  const int64_t m = rows_in.n, d = rows_in.d;
  const int64_t blocks = (d + kCombineBlock - 1) / kCombineBlock;
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
