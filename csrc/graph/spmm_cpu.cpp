// spmm, sddmm and edge_softmax on the CPU: OpenMP over destination rows (blocks balanced by edges), each
// row's slots in order, features in L1-sized tiles (row_reduce_cpu.h). No atomics, no per-call scratch.
#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "../common/parallel.h"
#include "row_reduce_cpu.h"
#include "spmm.h"

namespace ck::CK_BACKEND {
namespace {

using cpu_detail::for_row_blocks;
using cpu_detail::for_rows;
using cpu_detail::reduce_row;

template <class F>
decltype(auto) with_indices(const CsrView& g, F&& f) {
  return dispatch_index(g.indices_dtype, "indices", [&](auto tag) {
    using I = typename decltype(tag)::type;
    return f(static_cast<const I*>(g.indices));
  });
}

// Rows [r0, r1): each row's heads in turn, its slots in order. W > 0: the head width d is W at compile time.
template <Reduce R, bool Weighted, int W, class T, class I>
CK_ALWAYS_INLINE void spmm_range(const T* x, int64_t heads, int64_t d_runtime, const CsrView& g, const I* idx,
                                 const T* w, int64_t wheads, T* out, int64_t* arg, int64_t r0, int64_t r1) {
  const int64_t d = W > 0 ? int64_t(W) : d_runtime;
  const int64_t f = heads * d;
  const int64_t last = g.indptr[g.rows];
  for (int64_t i = r0; i < r1; ++i) {
    const int64_t begin = g.indptr[i], end = g.indptr[i + 1];
    for (int64_t h = 0; h < heads; ++h) {
      auto row = [&](int64_t k) { return x + int64_t(idx[k]) * f + h * d; };
      auto weight = [&](int64_t k) { return to_acc(w[k * wheads + (wheads > 1 ? h : 0)]); };  // slot order
      auto id = [&](int64_t k) { return g.eid[k]; };
      reduce_row<R, Weighted, W>(begin, end, last, d, row, weight, id, int64_t(g.edges), out + i * f + h * d,
                                 arg ? arg + i * f + h * d : nullptr);
    }
  }
}

template <Reduce R, bool Weighted, int W, class T, class I>
void spmm_range_base(const T* x, int64_t heads, int64_t d, const CsrView& g, const I* idx, const T* w,
                     int64_t wheads, T* out, int64_t* arg, int64_t r0, int64_t r1) {
  spmm_range<R, Weighted, W>(x, heads, d, g, idx, w, wheads, out, arg, r0, r1);
}

#ifdef CK_AVX512
template <Reduce R, bool Weighted, int W, class T, class I>
CK_AVX512 CK_NO_CONTRACT void spmm_range_avx512(const T* x, int64_t heads, int64_t d, const CsrView& g, const I* idx,
                                                const T* w, int64_t wheads, T* out, int64_t* arg, int64_t r0,
                                                int64_t r1) {
  spmm_range<R, Weighted, W>(x, heads, d, g, idx, w, wheads, out, arg, r0, r1);
}
#endif

template <class T, class I>
using RangeFn = void (*)(const T*, int64_t, int64_t, const CsrView&, const I*, const T*, int64_t, T*, int64_t*, int64_t,
                         int64_t);

template <Reduce R, bool Weighted, int W, class T, class I>
RangeFn<T, I> range_fn_for() {
#ifdef CK_AVX512
  if (has_avx512()) return &spmm_range_avx512<R, Weighted, W, T, I>;
#endif
  return &spmm_range_base<R, Weighted, W, T, I>;
}

// Fixed widths for the common head sizes of float32 / float64 sums and means (accumulators in registers);
// other widths, 16-bit types and max / min take the runtime-width loop.
template <Reduce R, bool Weighted, class T, class I>
RangeFn<T, I> range_fn(int64_t d) {
  if constexpr ((R == Reduce::sum || R == Reduce::mean) && (std::is_same_v<T, float> || std::is_same_v<T, double>)) {
    switch (d) {
      case 16: return range_fn_for<R, Weighted, 16, T, I>();
      case 32: return range_fn_for<R, Weighted, 32, T, I>();
      case 64: return range_fn_for<R, Weighted, 64, T, I>();
      case 128: return range_fn_for<R, Weighted, 128, T, I>();
      case 256: return range_fn_for<R, Weighted, 256, T, I>();
      default: break;
    }
  }
  return range_fn_for<R, Weighted, 0, T, I>();
}

template <Reduce R, bool Weighted, class T, class I>
void spmm_rows(const T* x, int64_t heads, int64_t d, const CsrView& g, const I* idx, const T* w, int64_t wheads,
               T* out, int64_t* arg) {
  const RangeFn<T, I> fn = range_fn<R, Weighted, T, I>(d);
  for_row_blocks(g.rows, g.indptr, g.edges,
                 [&](int64_t r0, int64_t r1) { fn(x, heads, d, g, idx, w, wheads, out, arg, r0, r1); });
}

template <class T, class I>
void spmm_typed(Reduce r, const T* x, int64_t heads, int64_t d, const CsrView& g, const I* idx, const T* w,
                int64_t wheads, T* out, int64_t* arg) {
  auto run = [&](auto rtag, auto wtag) {
    spmm_rows<decltype(rtag)::value, decltype(wtag)::value>(x, heads, d, g, idx, w, wheads, out, arg);
  };
  using Yes = std::true_type;
  using No = std::false_type;
  auto go = [&](auto wtag) {
    switch (r) {
      case Reduce::sum: return run(std::integral_constant<Reduce, Reduce::sum>{}, wtag);
      case Reduce::mean: return run(std::integral_constant<Reduce, Reduce::mean>{}, wtag);
      case Reduce::max: return run(std::integral_constant<Reduce, Reduce::max>{}, wtag);
      case Reduce::min: return run(std::integral_constant<Reduce, Reduce::min>{}, wtag);
      case Reduce::mul: throw ValueError("reduce: spmm supports sum, mean, max and min");
    }
  };
  if (w) go(Yes{});
  else go(No{});
}

thread_local std::vector<unsigned char> weight_scratch;

// The edge weights in CSR slot order (one pass of gathers with nothing else in flight, into a reused
// buffer), so that the reduction reads them sequentially instead of one random read per slot.
template <class T>
const T* weights_in_slot_order(const T* w, int64_t wheads, const CsrView& g) {
  T* out = reinterpret_cast<T*>(cpu_detail::scratch(weight_scratch, size_t(g.edges * wheads) * sizeof(T)));
  parallel_for(g.edges, 1 << 15, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k)
      for (int64_t h = 0; h < wheads; ++h) out[k * wheads + h] = w[g.eid[k] * wheads + h];
  });
  return out;
}

}  // namespace

void spmm(const Array& x, int64_t heads, int64_t d, const Array& indptr, const Array& indices, const Array& eid,
          const Array& weight, bool weight_in_slots, int64_t reduce, const Array& out, const Array& arg, Stream) {
  const Reduce r = reduce_from_int(reduce);
  const CsrView g = csr_view(indptr, indices, eid);
  check(heads >= 1 && d >= 0 && x.size % (heads * std::max<int64_t>(d, 1)) == 0, "x: expected (N, heads, D)");
  check(out.size == g.rows * heads * d && out.dtype == x.dtype, "out: expected (num_nodes, heads, D) of x's dtype");
  check(weight.size == 0 || weight.size == g.edges || weight.size == g.edges * heads,
        "edge_weight: expected (E,) or (E, heads)");
  check(weight.size == 0 || weight.dtype == x.dtype, "edge_weight: expected x's dtype");
  if (has_arg(r)) check(arg.size == out.size && arg.dtype == DType::int64, "arg: expected out's shape, int64");
  check_size_fits_int32(g.edges, "edges");
  const int64_t wheads = g.edges ? weight.size / g.edges : 1;
  advise_huge_pages(out.data, out.size * dtype_bytes(out.dtype));
  if (has_arg(r)) advise_huge_pages(arg.data, arg.size * 8);
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    with_indices(g, [&](auto idx) {
      const T* w = weight.size == 0 ? nullptr
                   : weight_in_slots ? static_cast<const T*>(weight.data)
                                     : weights_in_slot_order(static_cast<const T*>(weight.data), wheads, g);
      spmm_typed<T>(r, static_cast<const T*>(x.data), heads, d, g, idx, w, wheads, static_cast<T*>(out.data),
                    has_arg(r) ? static_cast<int64_t*>(arg.data) : nullptr);
    });
  });
}

void sddmm(const Array& a, const Array& b, int64_t heads, int64_t d, const Array& indptr, const Array& indices,
           const Array& eid, const Array& out, Stream) {
  const CsrView g = csr_view(indptr, indices, eid);
  check(heads >= 1 && d >= 0, "a: expected (N, heads, D)");
  check(a.size == g.rows * heads * d, "a: expected (num_nodes, heads, D)");
  check(b.size % (heads * std::max<int64_t>(d, 1)) == 0 && b.dtype == a.dtype, "b: expected (N, heads, D) of a's dtype");
  check(out.size == g.edges * heads && out.dtype == a.dtype, "out: expected (E, heads) of a's dtype");
  const int64_t f = heads * d;
  dispatch_float(a.dtype, "a", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T* pa = static_cast<const T*>(a.data);
    const T* pb = static_cast<const T*>(b.data);
    T* po = static_cast<T*>(out.data);
    with_indices(g, [&](auto idx) {
      for_rows(g.rows, g.indptr, g.edges, [&](int64_t i) {
        const T* ai = pa + i * f;
        for (int64_t k = g.indptr[i]; k < g.indptr[i + 1]; ++k) {
          if (k + cpu_detail::kAhead < g.indptr[g.rows])
            cpu_detail::prefetch_row(pb + int64_t(idx[k + cpu_detail::kAhead]) * f, f * int64_t(sizeof(T)));
          const T* bj = pb + int64_t(idx[k]) * f;
          for (int64_t h = 0; h < heads; ++h) {
            A dot = 0;
            for (int64_t c = 0; c < d; ++c) dot += to_acc(ai[h * d + c]) * to_acc(bj[h * d + c]);
            po[g.eid[k] * heads + h] = from_acc<T>(dot);
          }
        }
      });
    });
  });
}

namespace {

thread_local std::vector<float> stat_scratch32;
thread_local std::vector<double> stat_scratch64;

template <class A> A* stat_scratch(size_t n);
template <> float* stat_scratch<float>(size_t n) { return cpu_detail::scratch(stat_scratch32, n); }
template <> double* stat_scratch<double>(size_t n) { return cpu_detail::scratch(stat_scratch64, n); }

// Owner computes over the edges in edge order: each thread owns a range of destination nodes, streams dst,
// compacts (branch-free) the edges that land in its range and calls visit(e, node) for them in ascending e
// (the CSR's slot order, so the per-node statistics are those a walk of the CSR computes). The per-node
// statistics are (N, H): small next to the edges, and cache-resident where a CSR walk would read the
// edge-ordered scores at random. ahead(node) runs kStatAhead visits early, to prefetch that node's
// statistics: at N = 1e5 they are megabytes, past L2, and each visit reads them at random.
constexpr int64_t kStatAhead = 8;

template <class I, class Visit, class Init, class Ahead>
void for_owned_edges(const I* dst, int64_t e, int64_t rows, Init&& init, Visit&& visit, Ahead&& ahead) {
  const int owners = int(std::max<int64_t>(1, std::min<int64_t>(max_threads(), rows)));
  const std::vector<int64_t> bounds = cpu_detail::owner_bounds(dst, e, rows, owners);
  constexpr int64_t kBlock = 4096;
#ifdef _OPENMP
#pragma omp parallel for schedule(static, 1) if (owners > 1)
#endif
  for (int t = 0; t < owners; ++t) {
    const int64_t lo = bounds[size_t(t)], hi = bounds[size_t(t) + 1];
    if (lo == hi) continue;
    init(lo, hi);
    const uint64_t span = uint64_t(hi - lo);
    int32_t es[kBlock];
    for (int64_t e0 = 0; e0 < e; e0 += kBlock) {
      const int64_t e1 = std::min(e, e0 + kBlock);
      int64_t n = 0;
      for (int64_t x = e0; x < e1; ++x) {
        es[n] = int32_t(x);
        n += uint64_t(int64_t(dst[x]) - lo) < span;
      }
      for (int64_t m = 0; m < std::min(n, kStatAhead); ++m) ahead(int64_t(dst[es[m]]));
      for (int64_t m = 0; m < n; ++m) {
        if (m + kStatAhead < n) ahead(int64_t(dst[es[m + kStatAhead]]));
        visit(int64_t(es[m]), int64_t(dst[es[m]]));
      }
    }
  }
}

template <class F>
void with_dst(const Array& dst, int64_t edges, F&& f) {
  check(dst.size == edges, "dst: expected one entry per edge");
  check_size_fits_int32(edges, "edges");
  dispatch_index(dst.dtype, "dst", [&](auto tag) {
    using I = typename decltype(tag)::type;
    f(static_cast<const I*>(dst.data));
  });
}

}  // namespace

void edge_softmax(const Array& scores, int64_t heads, const Array& indptr, const Array& eid, const Array& dst,
                  const Array& out, Stream) {
  check(indptr.size >= 1 && heads >= 1, "indptr: expected num_nodes + 1 entries");
  const int64_t rows = indptr.size - 1, edges = eid.size;
  check(scores.size == edges * heads, "scores: expected (E,) or (E, heads)");
  check(out.size == scores.size && out.dtype == scores.dtype, "out: expected scores' shape and dtype");
  dispatch_float(scores.dtype, "scores", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T* s = static_cast<const T*>(scores.data);
    T* o = static_cast<T*>(out.data);
    A* stat = stat_scratch<A>(size_t(2 * rows * heads));  // (m, s) per node and head
    with_dst(dst, edges, [&](auto d) {
      for_owned_edges(
          d, edges, rows,
          [&](int64_t lo, int64_t hi) {
            for (int64_t x = lo * heads; x < hi * heads; ++x) stat[2 * x] = A(-INFINITY), stat[2 * x + 1] = A(0);
          },
          [&](int64_t e, int64_t i) {  // one pass: the online max and sum
            for (int64_t h = 0; h < heads; ++h) {
              Online<A> st{stat[2 * (i * heads + h)], stat[2 * (i * heads + h) + 1]};
              online_add(st, A(to_acc(s[e * heads + h])));
              stat[2 * (i * heads + h)] = st.m, stat[2 * (i * heads + h) + 1] = st.s;
            }
          },
          [&](int64_t i) { cpu_detail::prefetch_row(stat + 2 * i * heads, 2 * heads * int64_t(sizeof(A))); });
      parallel_for(edges, 1 << 14, [&](int64_t begin, int64_t end) {  // then the write, in edge order
        for (int64_t e = begin; e < end; ++e) {
          if (e + kStatAhead < end)
            cpu_detail::prefetch_row(stat + 2 * int64_t(d[e + kStatAhead]) * heads, 2 * heads * int64_t(sizeof(A)));
          const int64_t i = int64_t(d[e]);
          for (int64_t h = 0; h < heads; ++h) {
            const Online<A> st{stat[2 * (i * heads + h)], stat[2 * (i * heads + h) + 1]};
            o[e * heads + h] = from_acc<T>(online_prob(st, A(to_acc(s[e * heads + h]))));
          }
        }
      });
    });
  });
}

void edge_softmax_backward(const Array& y, const Array& grad, int64_t heads, const Array& indptr, const Array& eid,
                           const Array& dst, const Array& grad_scores, Stream) {
  check(indptr.size >= 1 && heads >= 1, "indptr: expected num_nodes + 1 entries");
  const int64_t rows = indptr.size - 1, edges = eid.size;
  check(y.size == edges * heads && grad.size == y.size && grad_scores.size == y.size, "y, grad: expected (E, heads)");
  check(grad.dtype == y.dtype && grad_scores.dtype == y.dtype, "grad: expected y's dtype");
  dispatch_float(y.dtype, "y", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T* py = static_cast<const T*>(y.data);
    const T* pg = static_cast<const T*>(grad.data);
    T* po = static_cast<T*>(grad_scores.data);
    A* dot = stat_scratch<A>(size_t(rows * heads));
    with_dst(dst, edges, [&](auto d) {
      for_owned_edges(
          d, edges, rows, [&](int64_t lo, int64_t hi) { std::fill(dot + lo * heads, dot + hi * heads, A(0)); },
          [&](int64_t e, int64_t i) {
            for (int64_t h = 0; h < heads; ++h) dot[i * heads + h] += to_acc(py[e * heads + h]) * to_acc(pg[e * heads + h]);
          },
          [&](int64_t i) { cpu_detail::prefetch_row(dot + i * heads, heads * int64_t(sizeof(A))); });
      parallel_for(edges, 1 << 14, [&](int64_t begin, int64_t end) {
        for (int64_t e = begin; e < end; ++e) {
          if (e + kStatAhead < end)
            cpu_detail::prefetch_row(dot + int64_t(d[e + kStatAhead]) * heads, heads * int64_t(sizeof(A)));
          const int64_t i = int64_t(d[e]);
          for (int64_t h = 0; h < heads; ++h) {
            const int64_t at = e * heads + h;
            po[at] = from_acc<T>(to_acc(py[at]) * (to_acc(pg[at]) - dot[i * heads + h]));
          }
        }
      });
    });
  });
}

}  // namespace ck::CK_BACKEND
