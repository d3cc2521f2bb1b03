// Fused graph attention on the GPU: one warp per row (destination forward and in the first backward pass,
// source in the second), heads in turn, lanes over the D / Dv features; dot products reduce with a fixed
// butterfly, and every output element is written by the one warp that owns its row: no atomics.
#include "../common/cuda_utils.cuh"
#include "attention.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int kWarps = 4;
constexpr int kLanes = 32;
constexpr int kPerLane = int(kMaxAttentionDim / kLanes);  // features a lane accumulates

template <class A>
__device__ A warp_sum(A v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <class T, class A>
__device__ A warp_dot(const T* a, const T* b, int64_t n, int lane) {
  A s = 0;
  for (int64_t c = lane; c < n; c += kLanes) s += to_acc(a[c]) * to_acc(b[c]);
  return warp_sum(s);
}

struct Dims {
  int64_t heads, d, dv, bh;
  double scale;
};

template <class T>
__device__ acc_t<T> logit_of(const T* qi, const T* kj, const T* bias, int64_t e, int64_t h, const Dims& s, int lane) {
  using A = acc_t<T>;
  A l = A(s.scale) * warp_dot<T, A>(qi, kj, s.d, lane);
  if (s.bh) l += to_acc(bias[e * s.bh + (s.bh > 1 ? h : 0)]);
  return l;
}

template <class T, class I>
__global__ void forward_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                               const T* __restrict__ bias, Dims s, const int64_t* __restrict__ indptr, int64_t rows,
                               const I* __restrict__ idx, const int64_t* __restrict__ eid, T* __restrict__ out,
                               acc_t<T>* __restrict__ lse) {
  using A = acc_t<T>;
  const int64_t i = int64_t(blockIdx.x) * kWarps + threadIdx.x / kLanes;
  if (i >= rows) return;
  const int lane = threadIdx.x % kLanes;
  for (int64_t h = 0; h < s.heads; ++h) {
    const T* qi = q + (i * s.heads + h) * s.d;
    A acc[kPerLane];
    for (int t = 0; t < kPerLane; ++t) acc[t] = 0;
    Online<A> st{A(-INFINITY), A(0)};
    for (int64_t kk = indptr[i]; kk < indptr[i + 1]; ++kk) {
      const int64_t j = int64_t(idx[kk]);
      const A logit = logit_of(qi, k + (j * s.heads + h) * s.d, bias, eid[kk], h, s, lane);
      if (logit == A(-INFINITY)) continue;
      const T* vj = v + (j * s.heads + h) * s.dv;
      A c = 1, p = 1;
      if (logit > st.m) {
        c = exp_acc(st.m - logit);
        st.s = st.s * c + A(1);
        st.m = logit;
      } else {
        p = exp_acc(logit - st.m);
        st.s += p;
      }
      for (int t = 0; t < kPerLane; ++t) {
        const int64_t x = lane + int64_t(t) * kLanes;
        if (x < s.dv) acc[t] = acc[t] * c + p * to_acc(vj[x]);
      }
    }
    const A inv = st.s > A(0) ? A(1) / st.s : A(0);
    for (int t = 0; t < kPerLane; ++t) {
      const int64_t x = lane + int64_t(t) * kLanes;
      if (x < s.dv) out[(i * s.heads + h) * s.dv + x] = from_acc<T>(acc[t] * inv);
    }
    if (lane == 0) lse[i * s.heads + h] = st.s > A(0) ? st.m + log_acc(st.s) : A(-INFINITY);
  }
}

template <class T, class I>
__global__ void backward_dst_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                    const T* __restrict__ bias, const T* __restrict__ out, const T* __restrict__ go,
                                    const acc_t<T>* __restrict__ lse, Dims s, const int64_t* __restrict__ indptr,
                                    int64_t rows, const I* __restrict__ idx, const int64_t* __restrict__ eid,
                                    T* __restrict__ gq, T* __restrict__ gb, acc_t<T>* __restrict__ delta) {
  using A = acc_t<T>;
  const int64_t i = int64_t(blockIdx.x) * kWarps + threadIdx.x / kLanes;
  if (i >= rows) return;
  const int lane = threadIdx.x % kLanes;
  for (int64_t h = 0; h < s.heads; ++h) {
    const T* qi = q + (i * s.heads + h) * s.d;
    const T* gi = go + (i * s.heads + h) * s.dv;
    const A dl_i = warp_dot<T, A>(gi, out + (i * s.heads + h) * s.dv, s.dv, lane);
    const A l = lse[i * s.heads + h];
    if (lane == 0) delta[i * s.heads + h] = dl_i;
    A acc[kPerLane];
    for (int t = 0; t < kPerLane; ++t) acc[t] = 0;
    for (int64_t kk = indptr[i]; kk < indptr[i + 1]; ++kk) {
      const int64_t j = int64_t(idx[kk]), e = eid[kk];
      const T* kj = k + (j * s.heads + h) * s.d;
      const A logit = logit_of(qi, kj, bias, e, h, s, lane);
      const A a = l == A(-INFINITY) || logit == A(-INFINITY) ? A(0) : exp_acc(logit - l);
      const A dlogit = a * (warp_dot<T, A>(gi, v + (j * s.heads + h) * s.dv, s.dv, lane) - dl_i);
      for (int t = 0; t < kPerLane; ++t) {
        const int64_t x = lane + int64_t(t) * kLanes;
        if (x < s.d) acc[t] += dlogit * to_acc(kj[x]);
      }
      if (gb && lane == 0) {
        if (s.bh > 1) gb[e * s.heads + h] = from_acc<T>(dlogit);
        else gb[e] = from_acc<T>(h == 0 ? dlogit : to_acc(gb[e]) + dlogit);
      }
    }
    for (int t = 0; t < kPerLane; ++t) {
      const int64_t x = lane + int64_t(t) * kLanes;
      if (x < s.d) gq[(i * s.heads + h) * s.d + x] = from_acc<T>(A(s.scale) * acc[t]);
    }
  }
}

template <class T, class I>
__global__ void backward_src_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                    const T* __restrict__ bias, const T* __restrict__ go,
                                    const acc_t<T>* __restrict__ lse, const acc_t<T>* __restrict__ delta, Dims s,
                                    const int64_t* __restrict__ indptr, int64_t rows, const I* __restrict__ idx,
                                    const int64_t* __restrict__ eid, T* __restrict__ gk, T* __restrict__ gv) {
  using A = acc_t<T>;
  const int64_t j = int64_t(blockIdx.x) * kWarps + threadIdx.x / kLanes;
  if (j >= rows) return;
  const int lane = threadIdx.x % kLanes;
  for (int64_t h = 0; h < s.heads; ++h) {
    const T* kj = k + (j * s.heads + h) * s.d;
    const T* vj = v + (j * s.heads + h) * s.dv;
    A acc_k[kPerLane], acc_v[kPerLane];
    for (int t = 0; t < kPerLane; ++t) acc_k[t] = 0, acc_v[t] = 0;
    for (int64_t kk = indptr[j]; kk < indptr[j + 1]; ++kk) {
      const int64_t i = int64_t(idx[kk]), e = eid[kk];
      const T* qi = q + (i * s.heads + h) * s.d;
      const T* gi = go + (i * s.heads + h) * s.dv;
      const A logit = logit_of(qi, kj, bias, e, h, s, lane);
      const A l = lse[i * s.heads + h];
      const A a = l == A(-INFINITY) || logit == A(-INFINITY) ? A(0) : exp_acc(logit - l);
      const A dlogit = a * (warp_dot<T, A>(gi, vj, s.dv, lane) - delta[i * s.heads + h]);
      for (int t = 0; t < kPerLane; ++t) {
        const int64_t x = lane + int64_t(t) * kLanes;
        if (x < s.d) acc_k[t] += dlogit * to_acc(qi[x]);
        if (x < s.dv) acc_v[t] += a * to_acc(gi[x]);
      }
    }
    for (int t = 0; t < kPerLane; ++t) {
      const int64_t x = lane + int64_t(t) * kLanes;
      if (x < s.d) gk[(j * s.heads + h) * s.d + x] = from_acc<T>(A(s.scale) * acc_k[t]);
      if (x < s.dv) gv[(j * s.heads + h) * s.dv + x] = from_acc<T>(acc_v[t]);
    }
  }
}

unsigned blocks_for(int64_t rows) {
  const int64_t b = (rows + kWarps - 1) / kWarps;
  check(b < (int64_t(1) << 31), "too many rows for one launch");
  return unsigned(b < 1 ? 1 : b);
}

template <class F>
void with_types(const Array& q, const Array& indices, F&& f) {
  dispatch_float(q.dtype, "q", [&](auto tag) {
    dispatch_index(indices.dtype, "indices", [&](auto itag) {
      using I = typename decltype(itag)::type;
      f(tag, static_cast<const I*>(indices.data));
    });
  });
}

}  // namespace

void attention_forward(const Array& q, const Array& k, const Array& v, const Array& bias, int64_t heads, int64_t d,
                       int64_t dv, double scale, const Array& indptr, const Array& indices, const Array& eid,
                       const Array& out, const Array& lse, Stream stream) {
  const CsrView g = csr_view(indptr, indices, eid);
  const AttentionShape sh = check_attention(q, k, v, bias, heads, d, dv, g.rows, g.edges);
  check(out.size == v.size && out.dtype == q.dtype, "out: expected v's shape, q's dtype");
  check(lse.size == g.rows * heads, "lse: expected (num_nodes, heads)");
  if (g.rows == 0) return;
  DeviceGuard guard(stream);
  with_types(q, indices, [&](auto tag, auto idx) {
    using T = typename decltype(tag)::type;
    forward_kernel<T><<<blocks_for(g.rows), kWarps * kLanes, 0, cuda_stream(stream)>>>(
        static_cast<const T*>(q.data), static_cast<const T*>(k.data), static_cast<const T*>(v.data),
        static_cast<const T*>(bias.data), Dims{heads, d, dv, sh.bias_heads, scale}, g.indptr, g.rows, idx, g.eid,
        static_cast<T*>(out.data), lse.as<acc_t<T>>("lse"));
    check_launch();
  });
}

void attention_backward_dst(const Array& q, const Array& k, const Array& v, const Array& bias, const Array& out,
                            const Array& grad_out, const Array& lse, int64_t heads, int64_t d, int64_t dv,
                            double scale, const Array& indptr, const Array& indices, const Array& eid,
                            const Array& grad_q, const Array& grad_bias, const Array& delta, Stream stream) {
  const CsrView g = csr_view(indptr, indices, eid);
  const AttentionShape sh = check_attention(q, k, v, bias, heads, d, dv, g.rows, g.edges);
  check(out.size == v.size && grad_out.size == v.size, "grad_out: expected out's shape");
  check(grad_q.size == q.size, "grad_q: expected q's shape");
  check(grad_bias.size == 0 || grad_bias.size == bias.size, "grad_bias: expected edge_bias' shape");
  check(lse.size == g.rows * heads && delta.size == lse.size, "lse, delta: expected (N, heads)");
  if (g.rows == 0) return;
  DeviceGuard guard(stream);
  with_types(q, indices, [&](auto tag, auto idx) {
    using T = typename decltype(tag)::type;
    backward_dst_kernel<T><<<blocks_for(g.rows), kWarps * kLanes, 0, cuda_stream(stream)>>>(
        static_cast<const T*>(q.data), static_cast<const T*>(k.data), static_cast<const T*>(v.data),
        static_cast<const T*>(bias.data), static_cast<const T*>(out.data), static_cast<const T*>(grad_out.data),
        lse.as<acc_t<T>>("lse"), Dims{heads, d, dv, sh.bias_heads, scale}, g.indptr, g.rows, idx, g.eid,
        static_cast<T*>(grad_q.data), grad_bias.size ? static_cast<T*>(grad_bias.data) : nullptr,
        delta.as<acc_t<T>>("delta"));
    check_launch();
  });
}

void attention_backward_src(const Array& q, const Array& k, const Array& v, const Array& bias, const Array& grad_out,
                            const Array& lse, const Array& delta, int64_t heads, int64_t d, int64_t dv, double scale,
                            const Array& cindptr, const Array& cindices, const Array& ceid, const Array& grad_k,
                            const Array& grad_v, Stream stream) {
  const CsrView g = csr_view(cindptr, cindices, ceid);
  const AttentionShape sh = check_attention(q, k, v, bias, heads, d, dv, g.rows, g.edges);
  check(grad_out.size == v.size && grad_k.size == k.size && grad_v.size == v.size, "grad_k, grad_v: expected k's, v's shapes");
  check(lse.size == g.rows * heads && delta.size == lse.size, "lse, delta: expected (N, heads)");
  if (g.rows == 0) return;
  DeviceGuard guard(stream);
  with_types(q, cindices, [&](auto tag, auto idx) {
    using T = typename decltype(tag)::type;
    backward_src_kernel<T><<<blocks_for(g.rows), kWarps * kLanes, 0, cuda_stream(stream)>>>(
        static_cast<const T*>(q.data), static_cast<const T*>(k.data), static_cast<const T*>(v.data),
        static_cast<const T*>(bias.data), static_cast<const T*>(grad_out.data), lse.as<acc_t<T>>("lse"),
        delta.as<acc_t<T>>("delta"), Dims{heads, d, dv, sh.bias_heads, scale}, g.indptr, g.rows, idx, g.eid,
        static_cast<T*>(grad_k.data), static_cast<T*>(grad_v.data));
    check_launch();
  });
}

}  // namespace ck::CK_BACKEND
