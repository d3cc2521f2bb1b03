// The CPU inner loop of every row reduction of the graph family (scatter, segment, spmm): a destination
// row i reduces the F-wide rows src_row(k), k in [begin_i, end_i), each scaled by weight(k), in k order, in
// tiles of at most kTile features held in registers / L1, and writes the result once. The caller supplies
// the segment bounds and how k maps to a source row, a weight and an arg id, so one loop serves a CSR
// with a permutation, the identity of sorted input, and a weighted graph.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "../common/array.h"
#include "../common/cpu_features.h"
#include "../common/fresh_pages.h"
#include "../common/half.h"
#include "../common/parallel.h"
#include "scatter.h"

#if defined(__GNUC__)
// the AVX-512 versions of the graph loops round w * x and the add separately, as the baseline x86-64 build
// does (it has no FMA): the same bits on every CPU
#define CK_NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define CK_NO_CONTRACT
#endif

namespace ck::cpu_detail {

constexpr int64_t kTile = 256;  // features per tile: 1 KiB of float accumulators, 2 KiB of arg ids
constexpr int64_t kAhead = 8;   // source rows prefetched ahead of the one being added

template <class T>
inline void prefetch_row(const T* row, int64_t bytes) {
  const char* p = reinterpret_cast<const char*>(row);
  for (int64_t b = 0; b < bytes && b < 256; b += 64) __builtin_prefetch(p + b);
}

// Prefetches a whole source row (up to 4 KiB of it), where prefetch_row covers its first 256 bytes.
template <class T>
inline void prefetch_full_row(const T* row, int64_t bytes) {
  const char* p = reinterpret_cast<const char*>(row);
  for (int64_t b = 0; b < bytes && b < 4096; b += 64) __builtin_prefetch(p + b);
}

// One destination row. begin/end: its k range; row(k): pointer to source row k's first feature;
// weight(k): its scale (ignored when Weighted is false); arg_id(k): what arg records. Whole source rows are
// prefetched about 4 KiB (4 to 16 slots) ahead, across the end of the row up to prefetch_end (the slots of
// all rows): rows have ~10 slots, so a prefetch confined to the row would leave most gathers unhidden.
// W > 0: f is the compile-time width W (<= kTile), so the loops have fixed lengths and the accumulators
// stay in registers.
template <Reduce R, bool Weighted, int W = 0, class T, class ArgT, class RowF, class WeightF, class ArgF>
CK_ALWAYS_INLINE void reduce_row(int64_t begin, int64_t end, int64_t prefetch_end, int64_t f_runtime, RowF row, WeightF weight,
                       ArgF arg_id, ArgT empty_arg, T* out, ArgT* arg) {
  static_assert(W >= 0 && W <= kTile, "W: a fixed width within one tile");
  using A = acc_t<T>;
  alignas(64) A acc[kTile];
  alignas(64) int32_t best[kTile];  // arg ids < 2^31 (E is checked): the blend has float's width
  const int64_t f = W > 0 ? int64_t(W) : f_runtime;
  const int64_t count = end - begin;
  const int64_t row_bytes = f * int64_t(sizeof(T));
  // whole rows (up to 4 KiB) prefetched about 4 KiB ahead, 4 to 16 rows
  const int64_t ahead = std::max<int64_t>(4, std::min<int64_t>(16, 4096 / std::max<int64_t>(row_bytes, 1)));
  for (int64_t f0 = 0; f0 < f; f0 += kTile) {
    const int64_t n = std::min(kTile, f - f0);
    if (count == 0) {
      for (int64_t c = 0; c < n; ++c) out[f0 + c] = from_acc<T>(reduce_identity<A>(R));
      if constexpr (R == Reduce::max || R == Reduce::min)
        for (int64_t c = 0; c < n; ++c) arg[f0 + c] = empty_arg;
      continue;
    }
    int64_t k = begin;
    if constexpr (R == Reduce::max || R == Reduce::min) {
      const T* first = row(k) + f0;
      const A w = Weighted ? A(weight(k)) : A(1);
      const int32_t id = int32_t(arg_id(k));
      for (int64_t c = 0; c < n; ++c) {
        acc[c] = Weighted ? w * to_acc(first[c]) : to_acc(first[c]);
        best[c] = id;
      }
      ++k;
    } else {
      for (int64_t c = 0; c < n; ++c) acc[c] = reduce_identity<A>(R);
    }
    for (; k < end; ++k) {
      if (k + ahead < prefetch_end && f0 == 0) prefetch_full_row(row(k + ahead), row_bytes);
      const T* src = row(k) + f0;
      if constexpr (R == Reduce::sum || R == Reduce::mean) {
        if constexpr (Weighted) {
          const A w = A(weight(k));
          for (int64_t c = 0; c < n; ++c) acc[c] += w * to_acc(src[c]);
        } else {
          for (int64_t c = 0; c < n; ++c) acc[c] += to_acc(src[c]);
        }
      } else if constexpr (R == Reduce::mul) {
        for (int64_t c = 0; c < n; ++c) acc[c] *= to_acc(src[c]);
      } else {
        const A w = Weighted ? A(weight(k)) : A(1);
        const int32_t id = int32_t(arg_id(k));
        for (int64_t c = 0; c < n; ++c) {
          const A v = Weighted ? w * to_acc(src[c]) : to_acc(src[c]);
          const A cur = acc[c];
          const bool take = (R == Reduce::max ? v > cur : v < cur) | ((v != v) & (cur == cur));
          acc[c] = take ? v : acc[c];
          best[c] = take ? id : best[c];
        }
      }
    }
    if constexpr (R == Reduce::mean) {
      const A inv = A(1) / A(count);
      for (int64_t c = 0; c < n; ++c) out[f0 + c] = from_acc<T>(acc[c] * inv);
    } else {
      for (int64_t c = 0; c < n; ++c) out[f0 + c] = from_acc<T>(acc[c]);
    }
    if constexpr (R == Reduce::max || R == Reduce::min)
      for (int64_t c = 0; c < n; ++c) arg[f0 + c] = ArgT(best[c]);  // empty_arg (E) is only written above
  }
}

// Rows [0, rows) in parallel, in blocks balanced by their edges (each row is computed by one thread, so the
// result does not depend on the thread count). bounds(i) -> (begin, end).
template <class Ptr, class BlockFn>
void for_row_blocks(int64_t rows, const Ptr* indptr, int64_t edges, BlockFn&& fn) {
  if (rows == 0) return;
  // blocks of about (edges + rows) / (16 * threads) work units, so a few heavy rows do not idle a thread
  const int64_t threads = max_threads();
  const int64_t work = edges + rows;
  const int64_t target = std::max<int64_t>(1024, work / (16 * threads));
  std::vector<int64_t> starts{0};
  if (threads > 1 && work > 4096) {
    int64_t row = 0;
    for (int64_t b = 1;; ++b) {  // binary search for the row where cumulative work reaches b * target
      const int64_t goal = b * target;
      int64_t lo = row, hi = rows;
      while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (int64_t(indptr[mid + 1]) - int64_t(indptr[0]) + mid + 1 >= goal) hi = mid;
        else lo = mid + 1;
      }
      row = lo + 1;
      if (row >= rows) break;
      starts.push_back(row);
    }
  }
  starts.push_back(rows);
  const int64_t blocks = int64_t(starts.size()) - 1;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) if (blocks > 1)
#endif
  for (int64_t b = 0; b < blocks; ++b) fn(starts[size_t(b)], starts[size_t(b) + 1]);
}

// Rows [0, rows) in parallel, as for_row_blocks; fn(i) per row.
template <class Ptr, class RowFn>
void for_rows(int64_t rows, const Ptr* indptr, int64_t edges, RowFn&& fn) {
  for_row_blocks(rows, indptr, edges, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) fn(i);
  });
}

// A reusable scratch buffer per calling thread: repeated calls reuse warm pages instead of faulting fresh
// ones in (a fresh page costs ~10x a warm one on these machines).
template <class T>
T* scratch(std::vector<T>& buffer, size_t n) {
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

// Row ranges with about equal numbers of edges, from a strided sample of the index (ownership changes
// only the speed, never the result).
template <class I>
std::vector<int64_t> owner_bounds(const I* index, int64_t e, int64_t rows, int owners) {
  std::vector<int64_t> bounds(size_t(owners) + 1, rows);
  bounds[0] = 0;
  const int64_t samples = std::min<int64_t>(e, 8192);
  std::vector<int64_t> sample(static_cast<size_t>(samples), 0);
  for (int64_t s = 0; s < samples; ++s) sample[size_t(s)] = int64_t(index[s * e / samples]);
  std::sort(sample.begin(), sample.end());
  for (int t = 1; t < owners; ++t) {
    const int64_t q = samples ? sample[size_t(samples * t / owners)] : rows * t / owners;
    bounds[size_t(t)] = std::max(bounds[size_t(t) - 1], std::min(q, rows));
  }
  return bounds;
}

}  // namespace ck::cpu_detail

