// spmm, sddmm and edge_softmax on the GPU: one warp per destination row (lanes over the features, or over
// the heads for edge_softmax), slots in order, so each output is computed in the CPU's order without
// atomics. Dot products reduce across the warp with a fixed butterfly, the same on every run.
#include "../common/cuda_utils.cuh"
#include "spmm.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int kWarps = 8;

template <class A>
__device__ A warp_sum(A v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

unsigned row_blocks(int64_t rows) {
  const int64_t b = (rows + kWarps - 1) / kWarps;
  check(b < (int64_t(1) << 31), "too many rows for one launch");
  return unsigned(b < 1 ? 1 : b);
}

template <Reduce R, class T, class I>
__global__ void spmm_kernel(const T* __restrict__ x, int64_t heads, int64_t d, const int64_t* __restrict__ indptr,
                            int64_t rows, const I* __restrict__ idx, const int64_t* __restrict__ eid,
                            const T* __restrict__ w, bool w_slots, int64_t wheads, int64_t edges,
                            T* __restrict__ out, int64_t* __restrict__ arg) {
  using A = acc_t<T>;
  const int64_t i = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (i >= rows) return;
  const int lane = threadIdx.x % 32;
  const int64_t f = heads * d, begin = indptr[i], end = indptr[i + 1];
  for (int64_t c = lane; c < f; c += 32) {
    const int64_t h = c / d;
    A acc = A(0);
    int64_t best = edges;
    for (int64_t k = begin; k < end; ++k) {
      A v = to_acc(x[int64_t(idx[k]) * f + c]);
      if (w) v *= to_acc(w[(w_slots ? k : eid[k]) * wheads + (wheads > 1 ? h : 0)]);
      if constexpr (R == Reduce::sum || R == Reduce::mean) {
        acc += v;
      } else {
        const bool take = k == begin || (R == Reduce::max ? beats_max(v, acc) : beats_min(v, acc));
        if (take) acc = v, best = eid[k];
      }
    }
    if (R == Reduce::mean && end > begin) acc = acc * (A(1) / A(end - begin));
    out[i * f + c] = from_acc<T>(acc);
    if constexpr (R == Reduce::max || R == Reduce::min) arg[i * f + c] = best;
  }
}

template <class T, class I>
__global__ void sddmm_kernel(const T* __restrict__ a, const T* __restrict__ b, int64_t heads, int64_t d,
                             const int64_t* __restrict__ indptr, int64_t rows, const I* __restrict__ idx,
                             const int64_t* __restrict__ eid, T* __restrict__ out) {
  using A = acc_t<T>;
  const int64_t i = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (i >= rows) return;
  const int lane = threadIdx.x % 32;
  const int64_t f = heads * d;
  for (int64_t k = indptr[i]; k < indptr[i + 1]; ++k) {
    const T* bj = b + int64_t(idx[k]) * f;
    for (int64_t h = 0; h < heads; ++h) {
      A s = 0;
      for (int64_t c = lane; c < d; c += 32) s += to_acc(a[i * f + h * d + c]) * to_acc(bj[h * d + c]);
      s = warp_sum(s);
      if (lane == 0) out[eid[k] * heads + h] = from_acc<T>(s);
    }
  }
}

template <class T>
__global__ void softmax_kernel(const T* __restrict__ s, int64_t heads, const int64_t* __restrict__ indptr, int64_t rows,
                               const int64_t* __restrict__ eid, T* __restrict__ out) {
  using A = acc_t<T>;
  const int64_t i = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (i >= rows) return;
  for (int64_t h = threadIdx.x % 32; h < heads; h += 32) {
    Online<A> st{A(-INFINITY), A(0)};
    for (int64_t k = indptr[i]; k < indptr[i + 1]; ++k) online_add(st, A(to_acc(s[eid[k] * heads + h])));
    for (int64_t k = indptr[i]; k < indptr[i + 1]; ++k) {
      const int64_t at = eid[k] * heads + h;
      out[at] = from_acc<T>(online_prob(st, A(to_acc(s[at]))));
    }
  }
}

template <class T>
__global__ void softmax_backward_kernel(const T* __restrict__ y, const T* __restrict__ g, int64_t heads,
                                        const int64_t* __restrict__ indptr, int64_t rows,
                                        const int64_t* __restrict__ eid, T* __restrict__ out) {
  using A = acc_t<T>;
  const int64_t i = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (i >= rows) return;
  for (int64_t h = threadIdx.x % 32; h < heads; h += 32) {
    A dot = 0;
    for (int64_t k = indptr[i]; k < indptr[i + 1]; ++k) {
      const int64_t at = eid[k] * heads + h;
      dot += to_acc(y[at]) * to_acc(g[at]);
    }
    for (int64_t k = indptr[i]; k < indptr[i + 1]; ++k) {
      const int64_t at = eid[k] * heads + h;
      out[at] = from_acc<T>(to_acc(y[at]) * (to_acc(g[at]) - dot));
    }
  }
}

}  // namespace

void spmm(const Array& x, int64_t heads, int64_t d, const Array& indptr, const Array& indices, const Array& eid,
          const Array& weight, bool weight_in_slots, int64_t reduce, const Array& out, const Array& arg,
          Stream stream) {
  const Reduce r = reduce_from_int(reduce);
  check(r != Reduce::mul, "reduce: spmm supports sum, mean, max and min");
  const CsrView g = csr_view(indptr, indices, eid);
  check(heads >= 1 && d >= 0, "x: expected (N, heads, D)");
  check(out.size == g.rows * heads * d && out.dtype == x.dtype, "out: expected (num_nodes, heads, D) of x's dtype");
  check(weight.size == 0 || weight.size == g.edges || weight.size == g.edges * heads,
        "edge_weight: expected (E,) or (E, heads)");
  check(weight.size == 0 || weight.dtype == x.dtype, "edge_weight: expected x's dtype");
  if (has_arg(r)) check(arg.size == out.size && arg.dtype == DType::int64, "arg: expected out's shape, int64");
  if (g.rows == 0 || heads * d == 0) return;
  const int64_t wheads = g.edges ? weight.size / g.edges : 1;
  DeviceGuard guard(stream);
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_index(indices.dtype, "indices", [&](auto itag) {
      using I = typename decltype(itag)::type;
      const T* px = static_cast<const T*>(x.data);
      const T* pw = weight.size ? static_cast<const T*>(weight.data) : nullptr;
      const I* idx = static_cast<const I*>(indices.data);
      T* po = static_cast<T*>(out.data);
      int64_t* pa = has_arg(r) ? static_cast<int64_t*>(arg.data) : nullptr;
      const unsigned grid = row_blocks(g.rows);
      cudaStream_t s = cuda_stream(stream);
      switch (r) {
        case Reduce::sum:
          spmm_kernel<Reduce::sum><<<grid, 32 * kWarps, 0, s>>>(px, heads, d, g.indptr, g.rows, idx, g.eid, pw, weight_in_slots, wheads, g.edges, po, pa);
          break;
        case Reduce::mean:
          spmm_kernel<Reduce::mean><<<grid, 32 * kWarps, 0, s>>>(px, heads, d, g.indptr, g.rows, idx, g.eid, pw, weight_in_slots, wheads, g.edges, po, pa);
          break;
        case Reduce::max:
          spmm_kernel<Reduce::max><<<grid, 32 * kWarps, 0, s>>>(px, heads, d, g.indptr, g.rows, idx, g.eid, pw, weight_in_slots, wheads, g.edges, po, pa);
          break;
        default:
          spmm_kernel<Reduce::min><<<grid, 32 * kWarps, 0, s>>>(px, heads, d, g.indptr, g.rows, idx, g.eid, pw, weight_in_slots, wheads, g.edges, po, pa);
          break;
      }
      check_launch();
    });
  });
}

void sddmm(const Array& a, const Array& b, int64_t heads, int64_t d, const Array& indptr, const Array& indices,
           const Array& eid, const Array& out, Stream stream) {
  const CsrView g = csr_view(indptr, indices, eid);
  check(heads >= 1 && d >= 0 && a.size == g.rows * heads * d, "a: expected (num_nodes, heads, D)");
  check(b.dtype == a.dtype, "b: expected a's dtype");
  check(out.size == g.edges * heads && out.dtype == a.dtype, "out: expected (E, heads) of a's dtype");
  if (g.rows == 0 || g.edges == 0) return;
  DeviceGuard guard(stream);
  dispatch_float(a.dtype, "a", [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_index(indices.dtype, "indices", [&](auto itag) {
      using I = typename decltype(itag)::type;
      sddmm_kernel<T, I><<<row_blocks(g.rows), 32 * kWarps, 0, cuda_stream(stream)>>>(
          static_cast<const T*>(a.data), static_cast<const T*>(b.data), heads, d, g.indptr, g.rows,
          static_cast<const I*>(indices.data), g.eid, static_cast<T*>(out.data));
      check_launch();
    });
  });
}

void edge_softmax(const Array& scores, int64_t heads, const Array& indptr, const Array& eid, const Array&,
                  const Array& out, Stream stream) {
  check(indptr.size >= 1 && heads >= 1, "indptr: expected num_nodes + 1 entries");
  const int64_t rows = indptr.size - 1;
  check(scores.size == eid.size * heads, "scores: expected (E,) or (E, heads)");
  check(out.size == scores.size && out.dtype == scores.dtype, "out: expected scores' shape and dtype");
  if (rows == 0 || scores.size == 0) return;
  DeviceGuard guard(stream);
  dispatch_float(scores.dtype, "scores", [&](auto tag) {
    using T = typename decltype(tag)::type;
    softmax_kernel<T><<<row_blocks(rows), 32 * kWarps, 0, cuda_stream(stream)>>>(
        static_cast<const T*>(scores.data), heads, indptr.as<int64_t>("indptr"), rows, eid.as<int64_t>("eid"),
        static_cast<T*>(out.data));
    check_launch();
  });
}

void edge_softmax_backward(const Array& y, const Array& grad, int64_t heads, const Array& indptr, const Array& eid,
                           const Array&, const Array& grad_scores, Stream stream) {
  check(indptr.size >= 1 && heads >= 1, "indptr: expected num_nodes + 1 entries");
  const int64_t rows = indptr.size - 1;
  check(y.size == eid.size * heads && grad.size == y.size && grad_scores.size == y.size, "y, grad: expected (E, heads)");
  check(grad.dtype == y.dtype && grad_scores.dtype == y.dtype, "grad: expected y's dtype");
  if (rows == 0 || y.size == 0) return;
  DeviceGuard guard(stream);
  dispatch_float(y.dtype, "y", [&](auto tag) {
    using T = typename decltype(tag)::type;
    softmax_backward_kernel<T><<<row_blocks(rows), 32 * kWarps, 0, cuda_stream(stream)>>>(
        static_cast<const T*>(y.data), static_cast<const T*>(grad.data), heads, indptr.as<int64_t>("indptr"), rows,
        eid.as<int64_t>("eid"), static_cast<T*>(grad_scores.data));
    check_launch();
  });
}

}  // namespace ck::CK_BACKEND
