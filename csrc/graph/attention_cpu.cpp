// Fused graph attention on the CPU: OpenMP over rows (destinations forward, destinations then sources
// backward), each row's slots in order, the D / Dv accumulators of one head on the stack.
#include <algorithm>
#include <cmath>

#include "../common/parallel.h"
#include "attention.h"
#include "row_reduce_cpu.h"

namespace ck::CK_BACKEND {
namespace {

using cpu_detail::for_rows;

template <class T, class A>
inline A dot(const T* a, const T* b, int64_t n) {
  A s = 0;
  for (int64_t c = 0; c < n; ++c) s += to_acc(a[c]) * to_acc(b[c]);
  return s;
}

// At the first head of slot kk: prefetch the rows (all heads) of a and b that slot kk + kAhead reads (past
// the row's end too). Sources come at random, so each row is a cache miss; the later heads find it in L1.
template <class T, class I>
CK_ALWAYS_INLINE void prefetch_ahead(const I* idx, int64_t kk, int64_t edges, const T* a, int64_t a_row,
                                     const T* b, int64_t b_row) {
  if (kk + cpu_detail::kAhead >= edges) return;
  const int64_t r = int64_t(idx[kk + cpu_detail::kAhead]);
  cpu_detail::prefetch_full_row(a + r * a_row, a_row * int64_t(sizeof(T)));
  cpu_detail::prefetch_full_row(b + r * b_row, b_row * int64_t(sizeof(T)));
}

template <class F>
void with_float_and_index(const Array& q, const Array& indices, F&& f) {
  dispatch_float(q.dtype, "q", [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_index(indices.dtype, "indices", [&](auto itag) {
      using I = typename decltype(itag)::type;
      f(TypeTag<T>{}, static_cast<const I*>(indices.data));
    });
  });
}

}  // namespace

void attention_forward(const Array& q, const Array& k, const Array& v, const Array& bias, int64_t heads, int64_t d,
                       int64_t dv, double scale, const Array& indptr, const Array& indices, const Array& eid,
                       const Array& out, const Array& lse, Stream) {
  const CsrView g = csr_view(indptr, indices, eid);
  const AttentionShape s = check_attention(q, k, v, bias, heads, d, dv, g.rows, g.edges);
  check(out.size == v.size && out.dtype == q.dtype, "out: expected v's shape, q's dtype");
  check(lse.size == g.rows * heads, "lse: expected (num_nodes, heads)");
  with_float_and_index(q, indices, [&](auto tag, auto idx) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T *pq = static_cast<const T*>(q.data), *pk = static_cast<const T*>(k.data);
    const T *pv = static_cast<const T*>(v.data), *pb = static_cast<const T*>(bias.data);
    T* po = static_cast<T*>(out.data);
    A* pl = lse.as<A>("lse");
    const A sc = A(scale);
    for_rows(g.rows, g.indptr, g.edges, [&](int64_t i) {
      A acc[kMaxAttentionDim];
      for (int64_t h = 0; h < heads; ++h) {
        const T* qi = pq + (i * heads + h) * d;
        Online<A> st{A(-INFINITY), A(0)};
        std::fill(acc, acc + dv, A(0));
        for (int64_t kk = g.indptr[i]; kk < g.indptr[i + 1]; ++kk) {
          if (h == 0) prefetch_ahead(idx, kk, g.edges, pk, heads * d, pv, heads * dv);
          const int64_t j = int64_t(idx[kk]);
          A logit = sc * dot<T, A>(qi, pk + (j * heads + h) * d, d);
          if (s.bias_heads) logit += to_acc(pb[g.eid[kk] * s.bias_heads + (s.bias_heads > 1 ? h : 0)]);
          if (logit == A(-INFINITY)) continue;
          const T* vj = pv + (j * heads + h) * dv;
          if (logit > st.m) {  // rescale what was accumulated under the old max
            const A c = exp_acc(st.m - logit);
            st.s = st.s * c + A(1);
            st.m = logit;
            for (int64_t x = 0; x < dv; ++x) acc[x] = acc[x] * c + to_acc(vj[x]);
          } else {
            const A p = exp_acc(logit - st.m);
            st.s += p;
            for (int64_t x = 0; x < dv; ++x) acc[x] += p * to_acc(vj[x]);
          }
        }
        T* oi = po + (i * heads + h) * dv;
        const A inv = st.s > A(0) ? A(1) / st.s : A(0);
        for (int64_t x = 0; x < dv; ++x) oi[x] = from_acc<T>(acc[x] * inv);
        pl[i * heads + h] = st.s > A(0) ? st.m + log_acc(st.s) : A(-INFINITY);
      }
    });
  });
}

void attention_backward_dst(const Array& q, const Array& k, const Array& v, const Array& bias, const Array& out,
                            const Array& grad_out, const Array& lse, int64_t heads, int64_t d, int64_t dv,
                            double scale, const Array& indptr, const Array& indices, const Array& eid,
                            const Array& grad_q, const Array& grad_bias, const Array& delta, Stream) {
  const CsrView g = csr_view(indptr, indices, eid);
  const AttentionShape s = check_attention(q, k, v, bias, heads, d, dv, g.rows, g.edges);
  check(out.size == v.size && grad_out.size == v.size && out.dtype == q.dtype && grad_out.dtype == q.dtype,
        "grad_out: expected out's shape and dtype");
  check(grad_q.size == q.size && grad_q.dtype == q.dtype, "grad_q: expected q's shape and dtype");
  check(grad_bias.size == 0 || (grad_bias.size == bias.size && grad_bias.dtype == q.dtype),
        "grad_bias: expected edge_bias' shape and dtype");
  check(lse.size == g.rows * heads && delta.size == lse.size && delta.dtype == lse.dtype, "lse, delta: expected (N, heads)");
  with_float_and_index(q, indices, [&](auto tag, auto idx) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T *pq = static_cast<const T*>(q.data), *pk = static_cast<const T*>(k.data);
    const T *pv = static_cast<const T*>(v.data), *pb = static_cast<const T*>(bias.data);
    const T *po = static_cast<const T*>(out.data), *pg = static_cast<const T*>(grad_out.data);
    const A* pl = lse.as<A>("lse");
    A* pdelta = delta.as<A>("delta");
    T* gq = static_cast<T*>(grad_q.data);
    T* gb = grad_bias.size ? static_cast<T*>(grad_bias.data) : nullptr;
    const A sc = A(scale);
    for_rows(g.rows, g.indptr, g.edges, [&](int64_t i) {
      A acc[kMaxAttentionDim];
      for (int64_t h = 0; h < heads; ++h) {
        const T* qi = pq + (i * heads + h) * d;
        const T* gi = pg + (i * heads + h) * dv;
        const A dl_i = dot<T, A>(gi, po + (i * heads + h) * dv, dv);
        const A l = pl[i * heads + h];
        pdelta[i * heads + h] = dl_i;
        std::fill(acc, acc + d, A(0));
        for (int64_t kk = g.indptr[i]; kk < g.indptr[i + 1]; ++kk) {
          if (h == 0) prefetch_ahead(idx, kk, g.edges, pk, heads * d, pv, heads * dv);
          const int64_t j = int64_t(idx[kk]), e = g.eid[kk];
          const T* kj = pk + (j * heads + h) * d;
          A logit = sc * dot<T, A>(qi, kj, d);
          if (s.bias_heads) logit += to_acc(pb[e * s.bias_heads + (s.bias_heads > 1 ? h : 0)]);
          const A a = l == A(-INFINITY) || logit == A(-INFINITY) ? A(0) : exp_acc(logit - l);
          const A dlogit = a * (dot<T, A>(gi, pv + (j * heads + h) * dv, dv) - dl_i);
          for (int64_t x = 0; x < d; ++x) acc[x] += dlogit * to_acc(kj[x]);
          if (gb) {
            if (s.bias_heads > 1) gb[e * heads + h] = from_acc<T>(dlogit);
            else gb[e] = from_acc<T>(h == 0 ? dlogit : to_acc(gb[e]) + dlogit);
          }
        }
        T* gqi = gq + (i * heads + h) * d;
        for (int64_t x = 0; x < d; ++x) gqi[x] = from_acc<T>(sc * acc[x]);
      }
    });
  });
}

void attention_backward_src(const Array& q, const Array& k, const Array& v, const Array& bias, const Array& grad_out,
                            const Array& lse, const Array& delta, int64_t heads, int64_t d, int64_t dv, double scale,
                            const Array& cindptr, const Array& cindices, const Array& ceid, const Array& grad_k,
                            const Array& grad_v, Stream) {
  const CsrView g = csr_view(cindptr, cindices, ceid);
  const AttentionShape s = check_attention(q, k, v, bias, heads, d, dv, g.rows, g.edges);
  check(grad_out.size == v.size && grad_out.dtype == q.dtype, "grad_out: expected v's shape, q's dtype");
  check(grad_k.size == k.size && grad_k.dtype == q.dtype, "grad_k: expected k's shape and dtype");
  check(grad_v.size == v.size && grad_v.dtype == q.dtype, "grad_v: expected v's shape and dtype");
  check(lse.size == g.rows * heads && delta.size == lse.size && delta.dtype == lse.dtype, "lse, delta: expected (N, heads)");
  with_float_and_index(q, cindices, [&](auto tag, auto idx) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T *pq = static_cast<const T*>(q.data), *pk = static_cast<const T*>(k.data);
    const T *pv = static_cast<const T*>(v.data), *pb = static_cast<const T*>(bias.data);
    const T* pg = static_cast<const T*>(grad_out.data);
    const A* pl = lse.as<A>("lse");
    const A* pdelta = delta.as<A>("delta");
    T *gk = static_cast<T*>(grad_k.data), *gv = static_cast<T*>(grad_v.data);
    const A sc = A(scale);
    for_rows(g.rows, g.indptr, g.edges, [&](int64_t j) {
      A acc_k[kMaxAttentionDim], acc_v[kMaxAttentionDim];
      for (int64_t h = 0; h < heads; ++h) {
        const T* kj = pk + (j * heads + h) * d;
        const T* vj = pv + (j * heads + h) * dv;
        std::fill(acc_k, acc_k + d, A(0));
        std::fill(acc_v, acc_v + dv, A(0));
        for (int64_t kk = g.indptr[j]; kk < g.indptr[j + 1]; ++kk) {
          if (h == 0) prefetch_ahead(idx, kk, g.edges, pq, heads * d, pg, heads * dv);
          const int64_t i = int64_t(idx[kk]), e = g.eid[kk];
          const T* qi = pq + (i * heads + h) * d;
          const T* gi = pg + (i * heads + h) * dv;
          A logit = sc * dot<T, A>(qi, kj, d);
          if (s.bias_heads) logit += to_acc(pb[e * s.bias_heads + (s.bias_heads > 1 ? h : 0)]);
          const A l = pl[i * heads + h];
          const A a = l == A(-INFINITY) || logit == A(-INFINITY) ? A(0) : exp_acc(logit - l);
          const A dlogit = a * (dot<T, A>(gi, vj, dv) - pdelta[i * heads + h]);
          for (int64_t x = 0; x < d; ++x) acc_k[x] += dlogit * to_acc(qi[x]);
          for (int64_t x = 0; x < dv; ++x) acc_v[x] += a * to_acc(gi[x]);
        }
        for (int64_t x = 0; x < d; ++x) gk[(j * heads + h) * d + x] = from_acc<T>(sc * acc_k[x]);
        for (int64_t x = 0; x < dv; ++x) gv[(j * heads + h) * dv + x] = from_acc<T>(acc_v[x]);
      }
    });
  });
}

}  // namespace ck::CK_BACKEND
