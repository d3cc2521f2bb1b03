// MoE routing on the GPU: one warp per token row. The k picks are k rounds of a warp-wide argmax over the
// row, each round taking the best key that ranks strictly after the previous pick in the total order
// (key descending, NaN first, then id ascending), so no per-row state beyond the last pick is kept, for any
// E and k. Group selection is the same over group scores; eligible groups are kept as a bit mask in shared
// memory. Scores are recomputed from the logits on the fly (one read of the row per round, cached in L1).
#include <cfloat>

#include "../common/cuda_utils.cuh"
#include "route.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int kWarps = 8;
constexpr int kMaxGroups = 1024;

template <class A>
struct Pick {
  A key;
  int32_t id;  // -1: none
};

template <class A>
__device__ __forceinline__ bool ranks_before(A a, int32_t i, A b, int32_t j) {
  return key_greater(a, b) || (!key_greater(b, a) && i < j);
}

template <class A>
__device__ __forceinline__ Pick<A> better(Pick<A> x, Pick<A> y) {
  if (x.id < 0) return y;
  if (y.id < 0) return x;
  return ranks_before(y.key, y.id, x.key, x.id) ? y : x;
}

template <class A>
__device__ __forceinline__ Pick<A> warp_best(Pick<A> p) {
  for (int offset = 16; offset > 0; offset /= 2) {
    Pick<A> o;
    o.key = __shfl_xor_sync(0xffffffffu, p.key, offset);
    o.id = __shfl_xor_sync(0xffffffffu, p.id, offset);
    p = better(p, o);
  }
  return p;
}

template <class A>
__device__ __forceinline__ A warp_max(A v) {
  for (int offset = 16; offset > 0; offset /= 2) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

template <class A>
__device__ __forceinline__ A warp_sum(A v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <class T, class A>
struct Row {
  const T* l;
  const A* bias;
  RouteParams p;
  A m, z;
  __device__ A logit(int64_t e) const { return A(to_acc(l[e])); }
  __device__ A score(int64_t e) const {
    return p.score == MoeScore::softmax ? moe_exp(logit(e) - m) / z : moe_score(logit(e), p.score);
  }
  __device__ A key(int64_t e) const {
    if (p.by_logit()) return logit(e);
    const A s = score(e);
    return p.has_bias ? s + bias[e] : s;
  }
  __device__ A group_score(int64_t g) const {
    const int64_t size = p.experts / p.n_group;
    A first = key(g * size), second = A(0);
    bool has_second = false;
    for (int64_t j = 1; j < size; ++j) {
      const A v = key(g * size + j);
      if (key_greater(v, first)) second = first, first = v, has_second = true;
      else if (!has_second || key_greater(v, second)) second = v, has_second = true;
    }
    return has_second ? first + second : first;
  }
};

template <class T, class A>
__global__ void route_kernel(const T* __restrict__ logits, const A* __restrict__ bias, RouteParams p,
                             A* __restrict__ weights, int32_t* __restrict__ ids) {
  __shared__ uint32_t allowed_bits[kWarps][kMaxGroups / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t t = int64_t(blockIdx.x) * kWarps + warp;
  if (t >= p.tokens) return;
  const int64_t E = p.experts;
  Row<T, A> row{logits + t * E, bias, p, A(0), A(0)};
  if (p.full_softmax()) {
    A m = -INFINITY;
    for (int64_t e = lane; e < E; e += 32) m = fmax(m, row.logit(e));
    row.m = warp_max(m);
    A z = A(0);
    for (int64_t e = lane; e < E; e += 32) z += moe_exp(row.logit(e) - row.m);
    row.z = warp_sum(z);
  }
  uint32_t* allowed = allowed_bits[warp];
  const int64_t size = p.n_group ? E / p.n_group : E;
  if (p.n_group) {
    for (int64_t w = lane; w < kMaxGroups / 32; w += 32) allowed[w] = 0;
    __syncwarp();
    Pick<A> last{A(0), -1};
    for (int64_t round = 0; round < p.topk_group; ++round) {
      Pick<A> best{A(0), -1};
      for (int64_t g = lane; g < p.n_group; g += 32) {
        const A s = row.group_score(g);
        if (last.id >= 0 && !ranks_before(last.key, last.id, s, int32_t(g))) continue;
        best = better(best, Pick<A>{s, int32_t(g)});
      }
      last = warp_best(best);
      if (lane == 0) allowed[last.id / 32] |= 1u << (last.id % 32);
      __syncwarp();
    }
  }
  Pick<A> last{A(0), -1};
  int32_t* out_ids = ids + t * p.k;
  for (int64_t round = 0; round < p.k; ++round) {
    Pick<A> best{A(0), -1};
    for (int64_t e = lane; e < E; e += 32) {
      if (p.n_group) {
        const int64_t g = e / size;
        if (!((allowed[g / 32] >> (g % 32)) & 1u)) continue;
      }
      const A v = row.key(e);
      if (last.id >= 0 && !ranks_before(last.key, last.id, v, int32_t(e))) continue;
      best = better(best, Pick<A>{v, int32_t(e)});
    }
    last = warp_best(best);
    if (lane == 0) out_ids[round] = last.id;
  }
  __syncwarp();
  if (lane != 0) return;
  A* w = weights + t * p.k;
  const A scale = A(p.scale);
  if (p.score == MoeScore::softmax) {
    if (p.renormalize || p.post) {
      A ms = row.logit(out_ids[0]);
      for (int64_t j = 1; j < p.k; ++j) ms = fmax(ms, row.logit(out_ids[j]));
      A sum = A(0);
      for (int64_t j = 0; j < p.k; ++j) sum += (w[j] = moe_exp(row.logit(out_ids[j]) - ms));
      for (int64_t j = 0; j < p.k; ++j) w[j] = w[j] / sum * scale;
    } else {
      for (int64_t j = 0; j < p.k; ++j) w[j] = moe_exp(row.logit(out_ids[j]) - row.m) / row.z * scale;
    }
  } else {
    A sum = A(0);
    for (int64_t j = 0; j < p.k; ++j) sum += (w[j] = moe_score(row.logit(out_ids[j]), p.score));
    const A denom = p.renormalize ? sum + renorm_eps<A>(p.score) : A(1);
    for (int64_t j = 0; j < p.k; ++j) w[j] = w[j] / denom * scale;
  }
}

}  // namespace

void moe_route(const Array& logits, const RouteParams& p, const Array& bias, const Array& weights, const Array& ids,
               Stream stream) {
  with_route_args(logits, p, bias, weights, ids, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    check(p.n_group <= kMaxGroups, "n_group: at most 1024 groups on the GPU");
    if (p.tokens == 0) return;
    DeviceGuard guard(stream);
    const int64_t blocks = (p.tokens + kWarps - 1) / kWarps;
    route_kernel<T, A><<<unsigned(blocks), kWarps * 32, 0, cuda_stream(stream)>>>(
        static_cast<const T*>(logits.data), p.has_bias ? static_cast<const A*>(bias.data) : nullptr, p,
        static_cast<A*>(weights.data), static_cast<int32_t*>(ids.data));
    check_launch();
  });
}

}  // namespace ck::CK_BACKEND
