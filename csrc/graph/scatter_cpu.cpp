// scatter / segment / gather on the CPU. scatter is a counting sort of the index followed by a segment
// reduction: no atomics, each destination row is reduced by one thread in source order.
//
// A parallel pass checks the index range and whether it is already sorted (then the segments are read off
// the index and no permutation is built). An unsorted index is reduced by the owners of the destination
// rows directly (see scatter_owner). The counting sort (each thread owns a range of destination rows and
// scans the whole index twice, once counting its rows and once placing their source rows: a stable sort
// without atomics) remains as the alternative path COMMKERNELS_SCATTER_SORT=1 selects; it gives the same
// bits.
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

using cpu_detail::for_rows;
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

// Reduces src (E, F) into out (rows, F) over the segments indptr, source rows perm[k] (identity when perm
// is null); arg ids are source rows.
template <class T, class Ptr, class ArgT>
void reduce_segments(Reduce r, const T* src, int64_t e, int64_t f, const Ptr* indptr, int64_t rows,
                     const int32_t* perm, T* out, ArgT* arg) {
  const int64_t edges = rows ? int64_t(indptr[rows]) - int64_t(indptr[0]) : 0;
  const int64_t last = rows ? int64_t(indptr[rows]) : 0;  // prefetches stay below the last slot
  auto run = [&](auto reduce_tag) {
    constexpr Reduce R = decltype(reduce_tag)::value;
    auto zero = [](int64_t) { return 1.0f; };
    if (perm) {
      auto row = [&](int64_t k) { return src + int64_t(perm[k]) * f; };
      auto id = [&](int64_t k) { return int64_t(perm[k]); };
      for_rows(rows, indptr, edges, [&](int64_t i) {
        reduce_row<R, false>(int64_t(indptr[i]), int64_t(indptr[i + 1]), last, f, row, zero, id, ArgT(e),
                             out + i * f, arg ? arg + i * f : nullptr);
      });
    } else {
      auto row = [&](int64_t k) { return src + k * f; };
      auto id = [](int64_t k) { return k; };
      for_rows(rows, indptr, edges, [&](int64_t i) {
        reduce_row<R, false>(int64_t(indptr[i]), int64_t(indptr[i + 1]), last, f, row, zero, id, ArgT(e),
                             out + i * f, arg ? arg + i * f : nullptr);
      });
    }
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
  constexpr int64_t kBlock = 4096;
#ifdef _OPENMP
#pragma omp parallel for schedule(static, 1) if (owners > 1)
#endif
  for (int t = 0; t < owners; ++t) {
    const int64_t lo = bounds[size_t(t)], hi = bounds[size_t(t) + 1];
    if (lo == hi) continue;
    const uint64_t span = uint64_t(hi - lo);
    for (int64_t x = lo * f; x < hi * f; ++x) acc[x] = reduce_identity<A>(R);
    if constexpr (extreme) std::fill(best + lo * f, best + hi * f, int32_t(e));
    if constexpr (R == Reduce::mean) std::fill(count + lo, count + hi, int64_t(0));
    int32_t js[kBlock];
    for (int64_t j0 = 0; j0 < e; j0 += kBlock) {
      const int64_t j1 = std::min(e, j0 + kBlock);
      int64_t n = 0;
      for (int64_t j = j0; j < j1; ++j) {
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
          const int32_t id = int32_t(j), none = int32_t(e);
          for (int64_t c = 0; c < f; ++c) {
            const A v = to_acc(s[c]), cur = a[c];
            const bool take = (b[c] == none) | (R == Reduce::max ? v > cur : v < cur) | ((v != v) & (cur == cur));
            a[c] = take ? v : cur;
            b[c] = take ? id : b[c];
          }
        }
      }
    }
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
    // unsorted: owner computes; sorted: segments read off the index, reduced in registers.
    // COMMKERNELS_SCATTER_SORT=1 sorts unsorted input instead (the tests check that both agree bitwise).
    if (!s.sorted && !std::getenv("COMMKERNELS_SCATTER_SORT")) {
      dispatch_float(src.dtype, "src", [&](auto tag) {
        using T = typename decltype(tag)::type;
        scatter_owner_any<T>(r, static_cast<const T*>(src.data), e, f, idx, dim_size, static_cast<T*>(out.data),
                             has_arg(r) ? static_cast<I*>(arg.data) : static_cast<I*>(nullptr));
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
