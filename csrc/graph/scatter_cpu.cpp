// scatter / segment / gather on the CPU: no atomics, each destination row is reduced by one thread in
// increasing source row, so every route below gives the same bits whatever the thread count.
//
// A parallel pass checks the index range and whether it is already sorted (then the segments are read off
// the index and no permutation is built). An unsorted index takes one of two routes:
//  - blocked (scatter_blocked): a stable counting sort of the source rows by block of destination rows, then
//    each block reduced into L2-resident accumulators and written once. Chosen where the output spans at
//    least two blocks per thread and src rows are at least 512 bytes (gathered in random order at
//    near-streaming speed), or 256 bytes for max / min (whose owners read and write both out and the arg
//    ids at random).
//  - owner computes (scatter_owner): each thread owns a range of destination rows, streams the whole index
//    and adds its source rows into its rows of out; cheaper for short rows, which streaming reads in full.
// The older counting sort into a full permutation (each thread owns a range of destination rows and scans
// the whole index twice) remains as the route COMMKERNELS_SCATTER_PATH=sort (or COMMKERNELS_SCATTER_SORT=1)
// selects; COMMKERNELS_SCATTER_PATH=owner / blocked force the others. The tests check that all agree bitwise.
// The hot loops have AVX-512 versions (runtime dispatch, no FMA contraction: the same bits as the baseline
// build) with fixed-length loops at the common widths.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <string>
#include <vector>

#include "../common/parallel.h"
#include "row_reduce_cpu.h"
#include "scatter.h"

namespace ck::CK_BACKEND {
namespace {

using cpu_detail::for_row_blocks;
using cpu_detail::reduce_row;

struct IndexScan {
  bool in_range = true;
  bool sorted = true;
};

template <class I>
IndexScan scan_index(const I* index, int64_t e, int64_t rows) {
  const int chunks = chunk_count(e, 1 << 16);
  std::vector<char> bad(size_t(chunks), 0), unsorted(size_t(chunks), 0);
  parallel_chunks(e, chunks, [&](int c, int64_t begin, int64_t end) {
    bool ok = true, sorted = true;
    int64_t prev = begin == 0 ? 0 : int64_t(index[begin - 1]);
    for (int64_t j = begin; j < end; ++j) {
      const int64_t v = int64_t(index[j]);
      ok &= uint64_t(v) < uint64_t(rows);
      sorted &= v >= prev;
      prev = v;
    }
    bad[size_t(c)] = !ok;
    unsorted[size_t(c)] = !sorted;
  });
  IndexScan s;
  for (int c = 0; c < chunks; ++c) s.in_range &= !bad[size_t(c)], s.sorted &= !unsorted[size_t(c)];
  return s;
}

// indptr (rows + 1) of a sorted, in-range index: each boundary j (index[j - 1] != index[j]) fills the rows
// it steps over.
template <class I>
void indptr_of_sorted(const I* index, int64_t e, int64_t rows, int64_t* indptr) {
  if (e == 0) {
    std::fill(indptr, indptr + rows + 1, int64_t(0));
    return;
  }
  std::fill(indptr, indptr + int64_t(index[0]) + 1, int64_t(0));
  std::fill(indptr + int64_t(index[e - 1]) + 1, indptr + rows + 1, e);
  parallel_for(e - 1, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin + 1; j < end + 1; ++j)
      for (int64_t r = int64_t(index[j - 1]) + 1; r <= int64_t(index[j]); ++r) indptr[r] = j;
  });
}

// Stable counting sort: indptr (rows + 1) and perm (e): the source rows of row i are
// perm[indptr[i] : indptr[i + 1]], ascending. pos has rows + 2 entries (see below).
template <class I>
void counting_sort(const I* index, int64_t e, int64_t rows, int64_t* pos, int32_t* perm) {
  const int owners = int(std::max<int64_t>(1, std::min<int64_t>(max_threads(), rows)));
  auto owned = [&](int t) { return rows / owners * t + std::min<int64_t>(t, rows % owners); };
  // pos[v + 2] <- count of v; a prefix sum makes pos[v + 1] the start of v; placing with pos[v + 1]++
  // leaves pos[v + 1] = end of v = start of v + 1, so pos[0 : rows + 1] is then the indptr.
#ifdef _OPENMP
#pragma omp parallel for schedule(static, 1) if (owners > 1)
#endif
  for (int t = 0; t < owners; ++t) {
    const int64_t lo = owned(t), hi = owned(t + 1);
    std::fill(pos + lo + 2, pos + hi + 2, int64_t(0));
    if (t == 0) pos[0] = pos[1] = 0;
    const uint64_t span = uint64_t(hi - lo);
    for (int64_t j = 0; j < e; ++j) {
      const int64_t v = int64_t(index[j]);
      if (uint64_t(v - lo) < span) ++pos[v + 2];
    }
  }
  // prefix sum over pos[2 : rows + 2], in chunks
  const int chunks = chunk_count(rows, 1 << 16);
  std::vector<int64_t> carry(size_t(chunks) + 1, 0);
  parallel_chunks(rows, chunks, [&](int c, int64_t begin, int64_t end) {
    int64_t s = 0;
    for (int64_t r = begin; r < end; ++r) s += pos[r + 2], pos[r + 2] = s;
    carry[size_t(c) + 1] = s;
  });
  for (int c = 0; c < chunks; ++c) carry[size_t(c) + 1] += carry[size_t(c)];
  parallel_chunks(rows, chunks, [&](int c, int64_t begin, int64_t end) {
    const int64_t add = carry[size_t(c)];
    if (add)
      for (int64_t r = begin; r < end; ++r) pos[r + 2] += add;
  });
#ifdef _OPENMP
#pragma omp parallel for schedule(static, 1) if (owners > 1)
#endif
  for (int t = 0; t < owners; ++t) {
    const int64_t lo = owned(t), hi = owned(t + 1);
    const uint64_t span = uint64_t(hi - lo);
    for (int64_t j = 0; j < e; ++j) {
      const int64_t v = int64_t(index[j]);
      if (uint64_t(v - lo) < span) perm[pos[v + 1]++] = int32_t(j);
    }
  }
}

// Rows [r0, r1) of a segment reduction: src rows perm[k] (Perm) or k of the slots indptr[i] : indptr[i + 1];
// arg ids are source rows. W > 0: F is W at compile time.
template <Reduce R, int W, bool Perm, class T, class Ptr, class ArgT>
CK_ALWAYS_INLINE void segment_range(const T* src, int64_t e, int64_t f_runtime, const Ptr* indptr, int64_t last,
                                    const int32_t* perm, T* out, ArgT* arg, int64_t r0, int64_t r1) {
  const int64_t f = W > 0 ? int64_t(W) : f_runtime;
  auto zero = [](int64_t) { return 1.0f; };
  auto row = [&](int64_t k) { return src + (Perm ? int64_t(perm[k]) : k) * f; };
  auto id = [&](int64_t k) { return Perm ? int64_t(perm[k]) : k; };
  for (int64_t i = r0; i < r1; ++i)
    reduce_row<R, false, W>(int64_t(indptr[i]), int64_t(indptr[i + 1]), last, f, row, zero, id, ArgT(e), out + i * f,
                            arg ? arg + i * f : nullptr);
}

template <Reduce R, int W, bool Perm, class T, class Ptr, class ArgT>
void segment_range_base(const T* src, int64_t e, int64_t f, const Ptr* indptr, int64_t last, const int32_t* perm,
                        T* out, ArgT* arg, int64_t r0, int64_t r1) {
  segment_range<R, W, Perm>(src, e, f, indptr, last, perm, out, arg, r0, r1);
}

#ifdef CK_AVX512
template <Reduce R, int W, bool Perm, class T, class Ptr, class ArgT>
CK_AVX512 CK_NO_CONTRACT void segment_range_avx512(const T* src, int64_t e, int64_t f, const Ptr* indptr, int64_t last,
                                                   const int32_t* perm, T* out, ArgT* arg, int64_t r0, int64_t r1) {
  segment_range<R, W, Perm>(src, e, f, indptr, last, perm, out, arg, r0, r1);
}
#endif

template <class T, class Ptr, class ArgT>
using SegmentFn = void (*)(const T*, int64_t, int64_t, const Ptr*, int64_t, const int32_t*, T*, ArgT*, int64_t, int64_t);

template <Reduce R, int W, bool Perm, class T, class Ptr, class ArgT>
SegmentFn<T, Ptr, ArgT> segment_fn_for() {
#ifdef CK_AVX512
  if (has_avx512()) return &segment_range_avx512<R, W, Perm, T, Ptr, ArgT>;
#endif
  return &segment_range_base<R, W, Perm, T, Ptr, ArgT>;
}

// Fixed widths for float32 / float64: sums and means at F = 16 ... 256, max / min at 16 and 64.
template <Reduce R, bool Perm, class T, class Ptr, class ArgT>
SegmentFn<T, Ptr, ArgT> segment_fn(int64_t f) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    if constexpr (R == Reduce::sum || R == Reduce::mean) {
      switch (f) {
        case 16: return segment_fn_for<R, 16, Perm, T, Ptr, ArgT>();
        case 32: return segment_fn_for<R, 32, Perm, T, Ptr, ArgT>();
        case 64: return segment_fn_for<R, 64, Perm, T, Ptr, ArgT>();
        case 128: return segment_fn_for<R, 128, Perm, T, Ptr, ArgT>();
        case 256: return segment_fn_for<R, 256, Perm, T, Ptr, ArgT>();
        default: break;
      }
    } else if constexpr (R == Reduce::max || R == Reduce::min) {
      switch (f) {
        case 16: return segment_fn_for<R, 16, Perm, T, Ptr, ArgT>();
        case 64: return segment_fn_for<R, 64, Perm, T, Ptr, ArgT>();
        default: break;
      }
    }
  }
  return segment_fn_for<R, 0, Perm, T, Ptr, ArgT>();
}

// Reduces src (E, F) into out (rows, F) over the segments indptr, source rows perm[k] (identity when perm
// is null); arg ids are source rows.
template <class T, class Ptr, class ArgT>
void reduce_segments(Reduce r, const T* src, int64_t e, int64_t f, const Ptr* indptr, int64_t rows,
                     const int32_t* perm, T* out, ArgT* arg) {
  const int64_t edges = rows ? int64_t(indptr[rows]) - int64_t(indptr[0]) : 0;
  const int64_t last = rows ? int64_t(indptr[rows]) : 0;  // prefetches stay below the last slot
  auto run = [&](auto reduce_tag) {
    constexpr Reduce R = decltype(reduce_tag)::value;
    const SegmentFn<T, Ptr, ArgT> fn = perm ? segment_fn<R, true, T, Ptr, ArgT>(f) : segment_fn<R, false, T, Ptr, ArgT>(f);
    for_row_blocks(rows, indptr, edges,
                   [&](int64_t r0, int64_t r1) { fn(src, e, f, indptr, last, perm, out, arg, r0, r1); });
  };
  switch (r) {
    case Reduce::sum: return run(std::integral_constant<Reduce, Reduce::sum>{});
    case Reduce::mean: return run(std::integral_constant<Reduce, Reduce::mean>{});
    case Reduce::max: return run(std::integral_constant<Reduce, Reduce::max>{});
    case Reduce::min: return run(std::integral_constant<Reduce, Reduce::min>{});
    case Reduce::mul: return run(std::integral_constant<Reduce, Reduce::mul>{});
  }
}

thread_local std::vector<int64_t> pos_scratch;
thread_local std::vector<int32_t> perm_scratch;

// ---- owner computes (unsorted index) -----------------------------------------------------------------
// Each thread owns a range of destination rows, streams the whole index, compacts (branch-free) the
// source rows that fall in its range, and adds them into its rows in increasing j: the same order, and
// so the same bits, as the sorted path, whatever the thread count. The big src array is read once, in
// increasing order; the random accesses go to the thread's own share of the (smaller) output.

thread_local std::vector<float> acc_scratch;
thread_local std::vector<int64_t> count_scratch;

thread_local std::vector<int32_t> best_scratch;

// Owner t's share of source rows [j0, j1): its rows [lo, hi) of acc (and best, count) updated in increasing j.
// W > 0: F is W at compile time.
template <Reduce R, int W, class T, class I>
CK_ALWAYS_INLINE void owner_step(const T* src, int64_t f_runtime, const I* index, int64_t lo, int64_t hi, int64_t j0,
                                 int64_t j1, int32_t none, acc_t<T>* acc, int32_t* best, int64_t* count) {
  using A = acc_t<T>;
  constexpr int64_t kBlock = 4096;
  const int64_t f = W > 0 ? int64_t(W) : f_runtime;
  const uint64_t span = uint64_t(hi - lo);
  int32_t js[kBlock];
  for (int64_t b0 = j0; b0 < j1; b0 += kBlock) {
    const int64_t b1 = std::min(j1, b0 + kBlock);
    int64_t n = 0;
    for (int64_t j = b0; j < b1; ++j) {
      js[n] = int32_t(j);
      n += uint64_t(int64_t(index[j]) - lo) < span;
    }
    for (int64_t m = 0; m < n; ++m) {
      if (m + cpu_detail::kAhead < n) {
        const int64_t ja = js[m + cpu_detail::kAhead];
        cpu_detail::prefetch_row(src + ja * f, f * int64_t(sizeof(T)));
        cpu_detail::prefetch_row(acc + int64_t(index[ja]) * f, f * int64_t(sizeof(A)));
      }
      const int64_t j = js[m], i = int64_t(index[j]);
      const T* s = src + j * f;
      A* a = acc + i * f;
      if constexpr (R == Reduce::sum || R == Reduce::mean) {
        for (int64_t c = 0; c < f; ++c) a[c] += to_acc(s[c]);
        if constexpr (R == Reduce::mean) ++count[i];
      } else if constexpr (R == Reduce::mul) {
        for (int64_t c = 0; c < f; ++c) a[c] *= to_acc(s[c]);
      } else {  // the first element of a row is taken (best == E); then larger (smaller), or the first NaN
        int32_t* b = best + i * f;
        const int32_t id = int32_t(j);
        for (int64_t c = 0; c < f; ++c) {
          const A v = to_acc(s[c]), cur = a[c];
          const bool take = (b[c] == none) | (R == Reduce::max ? v > cur : v < cur) | ((v != v) & (cur == cur));
          a[c] = take ? v : cur;
          b[c] = take ? id : b[c];
        }
      }
    }
  }
}

template <Reduce R, int W, class T, class I>
void owner_step_base(const T* src, int64_t f, const I* index, int64_t lo, int64_t hi, int64_t j0, int64_t j1,
                     int32_t none, acc_t<T>* acc, int32_t* best, int64_t* count) {
  owner_step<R, W>(src, f, index, lo, hi, j0, j1, none, acc, best, count);
}

#ifdef CK_AVX512
template <Reduce R, int W, class T, class I>
CK_AVX512 CK_NO_CONTRACT void owner_step_avx512(const T* src, int64_t f, const I* index, int64_t lo, int64_t hi,
                                                int64_t j0, int64_t j1, int32_t none, acc_t<T>* acc, int32_t* best,
                                                int64_t* count) {
  owner_step<R, W>(src, f, index, lo, hi, j0, j1, none, acc, best, count);
}
#endif

template <class T, class I>
using StepFn = void (*)(const T*, int64_t, const I*, int64_t, int64_t, int64_t, int64_t, int32_t, acc_t<T>*, int32_t*,
                        int64_t*);

template <Reduce R, int W, class T, class I>
StepFn<T, I> step_fn_for() {
#ifdef CK_AVX512
  if (has_avx512()) return &owner_step_avx512<R, W, T, I>;
#endif
  return &owner_step_base<R, W, T, I>;
}

template <Reduce R, class T, class I>
StepFn<T, I> step_fn(int64_t f) {
  if constexpr (R == Reduce::sum || R == Reduce::mean) {
    switch (f) {
      case 16: return step_fn_for<R, 16, T, I>();
      case 32: return step_fn_for<R, 32, T, I>();
      case 64: return step_fn_for<R, 64, T, I>();
      default: break;
    }
  }
  return step_fn_for<R, 0, T, I>();
}

template <Reduce R, class T, class I, class ArgT>
void scatter_owner(const T* src, int64_t e, int64_t f, const I* index, int64_t rows, T* out, ArgT* arg) {
  using A = acc_t<T>;
  constexpr bool direct = std::is_same_v<A, T>;  // float32 / float64 accumulate in out itself
  constexpr bool extreme = R == Reduce::max || R == Reduce::min;
  A* acc = direct ? reinterpret_cast<A*>(out) : reinterpret_cast<A*>(cpu_detail::scratch(acc_scratch, size_t(rows * f)));
  int64_t* count = R == Reduce::mean ? cpu_detail::scratch(count_scratch, size_t(rows)) : nullptr;
  // max / min: the arg in int32 (E < 2^31), so that its blend has the width of a float32 compare
  int32_t* best = extreme ? cpu_detail::scratch(best_scratch, size_t(rows * f)) : nullptr;
  const int owners = int(std::max<int64_t>(1, std::min<int64_t>(max_threads(), rows)));
  const std::vector<int64_t> bounds = cpu_detail::owner_bounds(index, e, rows, owners);
  const StepFn<T, I> step = step_fn<R, T, I>(f);
  // (The owners do not walk src in lockstep: a barrier every few thousand rows costs more than it saves
  // as soon as the machine is shared, when one owner is descheduled and the others wait.)
#ifdef _OPENMP
#pragma omp parallel for schedule(static, 1) if (owners > 1)
#endif
  for (int t = 0; t < owners; ++t) {
    const int64_t lo = bounds[size_t(t)], hi = bounds[size_t(t) + 1];
    if (lo == hi) continue;
    for (int64_t x = lo * f; x < hi * f; ++x) acc[x] = reduce_identity<A>(R);
    if constexpr (extreme) std::fill(best + lo * f, best + hi * f, int32_t(e));
    if constexpr (R == Reduce::mean) std::fill(count + lo, count + hi, int64_t(0));
    step(src, f, index, lo, hi, 0, e, int32_t(e), acc, best, count);
    if constexpr (R == Reduce::mean) {
      for (int64_t i = lo; i < hi; ++i) {
        const A inv = count[i] ? A(1) / A(count[i]) : A(0);
        for (int64_t c = 0; c < f; ++c) acc[i * f + c] *= inv;
      }
    }
    if constexpr (!direct)
      for (int64_t x = lo * f; x < hi * f; ++x) out[x] = from_acc<T>(acc[x]);
    if constexpr (extreme)
      for (int64_t x = lo * f; x < hi * f; ++x) arg[x] = ArgT(best[x]);
  }
}

template <class T, class I, class ArgT>
void scatter_owner_any(Reduce r, const T* src, int64_t e, int64_t f, const I* index, int64_t rows, T* out, ArgT* arg) {
  switch (r) {
    case Reduce::sum: return scatter_owner<Reduce::sum>(src, e, f, index, rows, out, arg);
    case Reduce::mean: return scatter_owner<Reduce::mean>(src, e, f, index, rows, out, arg);
    case Reduce::max: return scatter_owner<Reduce::max>(src, e, f, index, rows, out, arg);
    case Reduce::min: return scatter_owner<Reduce::min>(src, e, f, index, rows, out, arg);
    case Reduce::mul: return scatter_owner<Reduce::mul>(src, e, f, index, rows, out, arg);
  }
}

// ---- blocked (unsorted index, output larger than the caches) ------------------------------------------
// The destination rows are cut into blocks of B = 2^shift rows whose accumulators (B F of them, plus the
// arg ids for max / min) take about half a core's L2. A stable counting sort by block (two streaming
// passes over the index, one histogram per chunk) lists each block's (source row, row within the block)
// pairs in increasing source row; then the blocks are reduced in parallel, one block per thread at a
// time, into an L2-resident accumulator that is written to out once. Every destination row is still
// reduced by one thread in increasing source row: the bits of the sorted path, whatever the thread count;
// and out is written once, sequentially, where the owner path reads and writes it at random.

constexpr int64_t kBlockBytes = int64_t(1) << 19;

struct Slot {
  int32_t j;  // source row
  int32_t r;  // destination row within its block
};

template <class A>
int block_shift(int64_t f, bool extreme) {
  const int64_t per_row = std::max<int64_t>(1, f) * int64_t(sizeof(A) + (extreme ? 4 : 0)) + 4;
  int shift = 0;
  while (shift < 30 && (int64_t(2) << shift) * per_row <= kBlockBytes) ++shift;
  return shift;
}

thread_local std::vector<int64_t> hist_scratch;
thread_local std::vector<Slot> slot_scratch;

// start (blocks + 1): block b's slots are slots[start[b] : start[b + 1]], in increasing source row.
template <class I>
void bucket_by_block(const I* index, int64_t e, int shift, int64_t blocks, int64_t* start, Slot* slots) {
  const int chunks = chunk_count(e, 1 << 16);
  int64_t* hist = cpu_detail::scratch(hist_scratch, size_t(chunks) * size_t(blocks));
  parallel_chunks(e, chunks, [&](int c, int64_t begin, int64_t end) {
    int64_t* h = hist + int64_t(c) * blocks;
    std::fill(h, h + blocks, int64_t(0));
    for (int64_t j = begin; j < end; ++j) ++h[int64_t(index[j]) >> shift];
  });
  int64_t run = 0;  // chunk c's slots of block b follow chunk c - 1's: a stable sort
  for (int64_t b = 0; b < blocks; ++b) {
    start[b] = run;
    for (int c = 0; c < chunks; ++c) {
      const int64_t n = hist[int64_t(c) * blocks + b];
      hist[int64_t(c) * blocks + b] = run;
      run += n;
    }
  }
  start[blocks] = run;
  const int64_t mask = (int64_t(1) << shift) - 1;
  parallel_chunks(e, chunks, [&](int c, int64_t begin, int64_t end) {
    int64_t* h = hist + int64_t(c) * blocks;
    for (int64_t j = begin; j < end; ++j) {
      const int64_t v = int64_t(index[j]);
      slots[h[v >> shift]++] = Slot{int32_t(j), int32_t(v & mask)};
    }
  });
}

// One block: acc (rows_b, F) <- the reduction of its slots; best: the arg ids (max / min); count: the
// number of source rows of each row (mean). W > 0: F is the compile-time width W (fixed-length loops).
template <Reduce R, int W, class T>
CK_ALWAYS_INLINE void block_reduce(const T* src, int64_t f_runtime, const Slot* slots, int64_t k0, int64_t k1,
                                   int64_t rows_b, int32_t none, acc_t<T>* acc, int32_t* best, int32_t* count) {
  using A = acc_t<T>;
  constexpr bool extreme = R == Reduce::max || R == Reduce::min;
  const int64_t f = W > 0 ? int64_t(W) : f_runtime;
  for (int64_t x = 0; x < rows_b * f; ++x) acc[x] = reduce_identity<A>(R);
  if constexpr (extreme) std::fill(best, best + rows_b * f, none);
  if constexpr (R == Reduce::mean) std::fill(count, count + rows_b, int32_t(0));
  const int64_t row_bytes = f * int64_t(sizeof(T));
  // rows land in random order: prefetch whole rows into L2 (prefetcht1), about 8 KiB ahead
  // (prefetcht1 measured ~15% faster than no prefetch here at F = 256, prefetcht0 and prefetchnta between)
  const int64_t ahead = std::max<int64_t>(4, std::min<int64_t>(16, 8192 / std::max<int64_t>(row_bytes, 1)));
  for (int64_t k = k0; k < k1; ++k) {
    if (k + ahead < k1) {
      const char* p = reinterpret_cast<const char*>(src + int64_t(slots[k + ahead].j) * f);
      for (int64_t q = 0; q < row_bytes && q < 4096; q += 64) __builtin_prefetch(p + q, 0, 2);
    }
    const Slot s = slots[k];
    const T* x = src + int64_t(s.j) * f;
    A* a = acc + int64_t(s.r) * f;
    if constexpr (R == Reduce::sum || R == Reduce::mean) {
      for (int64_t c = 0; c < f; ++c) a[c] += to_acc(x[c]);
      if constexpr (R == Reduce::mean) ++count[s.r];
    } else if constexpr (R == Reduce::mul) {
      for (int64_t c = 0; c < f; ++c) a[c] *= to_acc(x[c]);
    } else {  // the first element of a row is taken (best == none); then larger (smaller), or the first NaN
      int32_t* b = best + int64_t(s.r) * f;
      for (int64_t c = 0; c < f; ++c) {
        const A v = to_acc(x[c]), cur = a[c];
        const bool take = (b[c] == none) | (R == Reduce::max ? v > cur : v < cur) | ((v != v) & (cur == cur));
        a[c] = take ? v : cur;
        b[c] = take ? s.j : b[c];
      }
    }
  }
}

template <Reduce R, int W, class T>
void block_reduce_base(const T* src, int64_t f, const Slot* slots, int64_t k0, int64_t k1, int64_t rows_b,
                       int32_t none, acc_t<T>* acc, int32_t* best, int32_t* count) {
  block_reduce<R, W, T>(src, f, slots, k0, k1, rows_b, none, acc, best, count);
}

#ifdef CK_AVX512
template <Reduce R, int W, class T>
CK_AVX512 CK_NO_CONTRACT void block_reduce_avx512(const T* src, int64_t f, const Slot* slots, int64_t k0, int64_t k1,
                                   int64_t rows_b, int32_t none, acc_t<T>* acc, int32_t* best, int32_t* count) {
  block_reduce<R, W, T>(src, f, slots, k0, k1, rows_b, none, acc, best, count);
}
#endif

template <class T>
using BlockFn = void (*)(const T*, int64_t, const Slot*, int64_t, int64_t, int64_t, int32_t, acc_t<T>*, int32_t*,
                         int32_t*);

template <Reduce R, int W, class T>
BlockFn<T> block_fn_for() {
#ifdef CK_AVX512
  if (has_avx512()) return &block_reduce_avx512<R, W, T>;
#endif
  return &block_reduce_base<R, W, T>;
}

template <Reduce R, class T>
BlockFn<T> block_fn(int64_t f) {
  switch (f) {
    case 16: return block_fn_for<R, 16, T>();
    case 32: return block_fn_for<R, 32, T>();
    case 64: return block_fn_for<R, 64, T>();
    case 128: return block_fn_for<R, 128, T>();
    case 256: return block_fn_for<R, 256, T>();
    default: return block_fn_for<R, 0, T>();
  }
}

thread_local std::vector<float> block_acc32;
thread_local std::vector<double> block_acc64;
thread_local std::vector<int32_t> block_best;
thread_local std::vector<int32_t> block_count;

template <class A> A* block_acc(size_t n);
template <> float* block_acc<float>(size_t n) { return cpu_detail::scratch(block_acc32, n); }
template <> double* block_acc<double>(size_t n) { return cpu_detail::scratch(block_acc64, n); }

template <Reduce R, class T, class ArgT>
void scatter_blocked(const T* src, int64_t e, int64_t f, const int64_t* start, const Slot* slots, int shift,
                     int64_t blocks, int64_t rows, T* out, ArgT* arg) {
  using A = acc_t<T>;
  constexpr bool extreme = R == Reduce::max || R == Reduce::min;
  const BlockFn<T> reduce_block = block_fn<R, T>(f);
  const int64_t B = int64_t(1) << shift;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) if (blocks > 1)
#endif
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t lo = b << shift, rows_b = std::min(rows, lo + B) - lo;
    A* acc = block_acc<A>(size_t(B * f));  // the calling thread's, reused block after block
    int32_t* best = extreme ? cpu_detail::scratch(block_best, size_t(B * f)) : nullptr;
    int32_t* count = R == Reduce::mean ? cpu_detail::scratch(block_count, size_t(B)) : nullptr;
    reduce_block(src, f, slots, start[b], start[b + 1], rows_b, int32_t(e), acc, best, count);
    T* o = out + lo * f;
    if constexpr (R == Reduce::mean) {
      for (int64_t i = 0; i < rows_b; ++i) {
        const A inv = count[i] ? A(1) / A(count[i]) : A(0);
        for (int64_t c = 0; c < f; ++c) o[i * f + c] = from_acc<T>(acc[i * f + c] * inv);
      }
    } else if constexpr (extreme) {  // an empty row keeps acc 0 and best E
      ArgT* g = arg + lo * f;
      for (int64_t x = 0; x < rows_b * f; ++x) o[x] = from_acc<T>(acc[x]), g[x] = ArgT(best[x]);
    } else {
      for (int64_t x = 0; x < rows_b * f; ++x) o[x] = from_acc<T>(acc[x]);
    }
  }
}

template <class T, class I, class ArgT>
void scatter_blocked_any(Reduce r, const T* src, int64_t e, int64_t f, const I* index, int64_t rows, int shift,
                         T* out, ArgT* arg) {
  const int64_t blocks = (rows + (int64_t(1) << shift) - 1) >> shift;
  int64_t* start = cpu_detail::scratch(pos_scratch, size_t(blocks) + 1);
  Slot* slots = cpu_detail::scratch(slot_scratch, size_t(e));
  bucket_by_block(index, e, shift, blocks, start, slots);
  switch (r) {
    case Reduce::sum: return scatter_blocked<Reduce::sum>(src, e, f, start, slots, shift, blocks, rows, out, arg);
    case Reduce::mean: return scatter_blocked<Reduce::mean>(src, e, f, start, slots, shift, blocks, rows, out, arg);
    case Reduce::max: return scatter_blocked<Reduce::max>(src, e, f, start, slots, shift, blocks, rows, out, arg);
    case Reduce::min: return scatter_blocked<Reduce::min>(src, e, f, start, slots, shift, blocks, rows, out, arg);
    case Reduce::mul: return scatter_blocked<Reduce::mul>(src, e, f, start, slots, shift, blocks, rows, out, arg);
  }
}

}  // namespace

void scatter(const Array& src, int64_t e, int64_t f, const Array& index, int64_t dim_size, int64_t reduce,
             const Array& out, const Array& arg, Stream) {
  const Reduce r = reduce_from_int(reduce);
  check(index.size == e, "index: expected one entry per row of src");
  check_reduce_outputs(src, e, f, dim_size, r, out, arg, index.dtype);
  dispatch_index(index.dtype, "index", [&](auto itag) {
    using I = typename decltype(itag)::type;
    const I* idx = static_cast<const I*>(index.data);
    const IndexScan s = scan_index(idx, e, dim_size);
    check(s.in_range, "index: expected values in [0, dim_size) = [0, " + std::to_string(dim_size) + ")");
    advise_huge_pages(out.data, out.size * dtype_bytes(out.dtype));
    if (has_arg(r)) advise_huge_pages(arg.data, arg.size * int64_t(sizeof(I)));
    // unsorted: blocks of destination rows reduced in L2 where the output is larger than the caches, else
    // owner computes; sorted: segments read off the index, reduced in registers. COMMKERNELS_SCATTER_PATH
    // (owner, blocked or sort; COMMKERNELS_SCATTER_SORT=1 is sort) picks the unsorted route instead: the
    // tests check that all agree bitwise.
    const char* path = std::getenv("COMMKERNELS_SCATTER_PATH");
    const std::string route = path ? path : std::getenv("COMMKERNELS_SCATTER_SORT") ? "sort" : "";
    if (!s.sorted && route != "sort") {
      dispatch_float(src.dtype, "src", [&](auto tag) {
        using T = typename decltype(tag)::type;
        T* o = static_cast<T*>(out.data);
        const T* x = static_cast<const T*>(src.data);
        I* a = has_arg(r) ? static_cast<I*>(arg.data) : static_cast<I*>(nullptr);
        const int shift = block_shift<acc_t<T>>(f, has_arg(r));
        const int64_t blocks = (dim_size + (int64_t(1) << shift) - 1) >> shift;
        // blocked where the output spans several blocks per thread and src rows are long enough to be
        // gathered at near-streaming speed: >= 512 bytes, or >= 256 for max / min, whose arg ids double the
        // owners' random traffic; shorter rows are cheaper streamed by the owners (measured here)
        const bool wide = f * int64_t(sizeof(T)) >= (has_arg(r) ? 256 : 512);
        if (route == "blocked" || (route != "owner" && wide && blocks >= 2 * int64_t(max_threads())))
          scatter_blocked_any<T>(r, x, e, f, idx, dim_size, shift, o, a);
        else
          scatter_owner_any<T>(r, x, e, f, idx, dim_size, o, a);
      });
      return;
    }
    int64_t* pos = cpu_detail::scratch(pos_scratch, size_t(dim_size) + 2);
    int32_t* perm = nullptr;
    if (s.sorted) {
      indptr_of_sorted(idx, e, dim_size, pos);
    } else {
      perm = cpu_detail::scratch(perm_scratch, size_t(e));
      counting_sort(idx, e, dim_size, pos, perm);
    }
    dispatch_float(src.dtype, "src", [&](auto tag) {
      using T = typename decltype(tag)::type;
      reduce_segments<T>(r, static_cast<const T*>(src.data), e, f, pos, dim_size, perm, static_cast<T*>(out.data),
                         has_arg(r) ? static_cast<I*>(arg.data) : static_cast<I*>(nullptr));
    });
  });
}

void segment(const Array& src, int64_t e, int64_t f, const Array& indptr, int64_t reduce, const Array& out,
             const Array& arg, Stream) {
  const Reduce r = reduce_from_int(reduce);
  check(indptr.size >= 1, "indptr: expected at least one entry");
  const int64_t rows = indptr.size - 1;
  check_reduce_outputs(src, e, f, rows, r, out, arg, indptr.dtype);
  advise_huge_pages(out.data, out.size * dtype_bytes(out.dtype));
  if (has_arg(r)) advise_huge_pages(arg.data, arg.size * dtype_bytes(indptr.dtype));
  dispatch_index(indptr.dtype, "indptr", [&](auto itag) {
    using I = typename decltype(itag)::type;
    const I* ptr = static_cast<const I*>(indptr.data);
    const int chunks = chunk_count(rows + 1, 1 << 16);
    std::vector<char> bad(size_t(chunks), 0);
    parallel_chunks(rows + 1, chunks, [&](int c, int64_t begin, int64_t end) {
      bool ok = true;
      int64_t prev = begin == 0 ? 0 : int64_t(ptr[begin - 1]);
      for (int64_t i = begin; i < end; ++i) {
        const int64_t v = int64_t(ptr[i]);
        ok &= v >= prev && v <= e;
        prev = v;
      }
      bad[size_t(c)] = !ok;
    });
    for (char b : bad) check(!b, "indptr: expected non-decreasing values in [0, " + std::to_string(e) + "]");
    dispatch_float(src.dtype, "src", [&](auto tag) {
      using T = typename decltype(tag)::type;
      reduce_segments<T>(r, static_cast<const T*>(src.data), e, f, ptr, rows, nullptr, static_cast<T*>(out.data),
                         has_arg(r) ? static_cast<I*>(arg.data) : static_cast<I*>(nullptr));
    });
  });
}

void gather(const Array& x, int64_t n, int64_t f, const Array& index, const Array& out, Stream) {
  const int64_t e = index.size;
  check(n >= 0 && f >= 0 && x.size == n * f, "x: expected N * F elements");
  check(out.size == e * f && out.dtype == x.dtype, "out: expected E * F elements of x's dtype");
  dispatch_index(index.dtype, "index", [&](auto itag) {
    using I = typename decltype(itag)::type;
    const I* idx = static_cast<const I*>(index.data);
    const IndexScan s = scan_index(idx, e, n);
    check(s.in_range, "index: expected values in [0, x.shape[0]) = [0, " + std::to_string(n) + ")");
    const size_t row_bytes = size_t(f) * (x.dtype == DType::float64 ? 8 : x.dtype == DType::float32 ? 4 : 2);
    if (row_bytes == 0) return;  // empty rows: nothing to copy (and memcpy of null pointers is undefined)
    const char* base = static_cast<const char*>(x.data);
    char* dst = static_cast<char*>(out.data);
    parallel_for(e, std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, f)), [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        if (j + cpu_detail::kAhead < end)
          cpu_detail::prefetch_row(base + size_t(idx[j + cpu_detail::kAhead]) * row_bytes, int64_t(row_bytes));
        std::memcpy(dst + size_t(j) * row_bytes, base + size_t(idx[j]) * row_bytes, row_bytes);
      }
    });
  });
}

}  // namespace ck::CK_BACKEND
