// MoE routing on the CPU: one pass per token row (OpenMP over rows), the k best kept in a sorted array by
// insertion (candidates arrive in id order, so a new one displaces only a strictly smaller key: ties stay
// with the lower id). No sort of the row, no per-call temporaries beyond per-grain row scratch.
#include <algorithm>
#include <vector>

#include "../common/parallel.h"
#include "route.h"

namespace ck::CK_BACKEND {
namespace {

// Inserts (key, id) into the n best so far (sorted best first, at most k); ids arrive ascending.
template <class A>
inline int64_t insert_best(A* keys, int32_t* ids, int64_t n, int64_t k, A key, int32_t id) {
  if (n == k && !key_greater(key, keys[k - 1])) return n;
  int64_t pos = n < k ? n : k - 1;
  while (pos > 0 && key_greater(key, keys[pos - 1])) {
    keys[pos] = keys[pos - 1];
    ids[pos] = ids[pos - 1];
    --pos;
  }
  keys[pos] = key;
  ids[pos] = id;
  return n < k ? n + 1 : n;
}

template <class T, class A>
struct RowScratch {
  std::vector<A> key, score, group_key, best_key;
  std::vector<int32_t> group_id, best_id;
  std::vector<char> allowed;
  explicit RowScratch(const RouteParams& p)
      : key(p.by_logit() ? 0 : size_t(p.experts)),
        score(p.by_logit() ? 0 : size_t(p.experts)),
        group_key(size_t(std::max<int64_t>(p.n_group, 1))),
        best_key(size_t(std::max(p.k, p.topk_group))),
        group_id(size_t(std::max<int64_t>(p.n_group, 1))),
        best_id(size_t(std::max(p.k, p.topk_group))),
        allowed(size_t(std::max<int64_t>(p.n_group, 1)), 1) {}
};

template <class T, class A>
void route_row(const T* l, const A* bias, const RouteParams& p, RowScratch<T, A>& s, A* w, int32_t* ids) {
  const int64_t E = p.experts, k = p.k;
  A* best_key = s.best_key.data();
  int32_t* best_id = s.best_id.data();
  A m = A(0), z = A(0);  // max logit and sum of exp(l - m) over the row, when the full softmax is needed
  if (p.full_softmax()) {
    m = to_acc(l[0]);
    for (int64_t e = 1; e < E; ++e) m = std::max(m, A(to_acc(l[e])));
    for (int64_t e = 0; e < E; ++e) z += moe_exp(A(to_acc(l[e])) - m);
  }
  int64_t n = 0;
  if (p.by_logit()) {
    for (int64_t e = 0; e < E; ++e) n = insert_best(best_key, best_id, n, k, A(to_acc(l[e])), int32_t(e));
  } else {
    for (int64_t e = 0; e < E; ++e) {
      const A v = to_acc(l[e]);
      const A sc = p.score == MoeScore::softmax ? moe_exp(v - m) / z : moe_score(v, p.score);
      s.score[size_t(e)] = sc;
      s.key[size_t(e)] = p.has_bias ? sc + bias[e] : sc;
    }
    const A* key = s.key.data();
    if (p.n_group) {
      const int64_t size = E / p.n_group;
      int64_t groups = 0;
      for (int64_t g = 0; g < p.n_group; ++g) {
        const A* gk = key + g * size;
        A first = gk[0], second = A(0);
        bool has_second = false;
        for (int64_t j = 1; j < size; ++j) {  // the top two of the group (ties keep both)
          if (key_greater(gk[j], first)) second = first, first = gk[j], has_second = true;
          else if (!has_second || key_greater(gk[j], second)) second = gk[j], has_second = true;
        }
        groups = insert_best(s.group_key.data(), s.group_id.data(), groups, p.topk_group,
                             has_second ? first + second : first, int32_t(g));
      }
      std::fill(s.allowed.begin(), s.allowed.end(), 0);
      for (int64_t j = 0; j < p.topk_group; ++j) s.allowed[size_t(s.group_id[size_t(j)])] = 1;
      for (int64_t g = 0; g < p.n_group; ++g) {
        if (!s.allowed[size_t(g)]) continue;
        for (int64_t e = g * size; e < (g + 1) * size; ++e) n = insert_best(best_key, best_id, n, k, key[e], int32_t(e));
      }
    } else {
      for (int64_t e = 0; e < E; ++e) n = insert_best(best_key, best_id, n, k, key[e], int32_t(e));
    }
  }
  // weights of the chosen ids, best first
  const A scale = A(p.scale);
  if (p.score == MoeScore::softmax) {
    if (p.renormalize || p.post) {
      A ms = to_acc(l[best_id[0]]);
      for (int64_t j = 1; j < k; ++j) ms = std::max(ms, A(to_acc(l[best_id[j]])));
      A sum = A(0);
      for (int64_t j = 0; j < k; ++j) sum += (w[j] = moe_exp(A(to_acc(l[best_id[j]])) - ms));
      for (int64_t j = 0; j < k; ++j) w[j] = w[j] / sum * scale;
    } else {
      for (int64_t j = 0; j < k; ++j) w[j] = moe_exp(A(to_acc(l[best_id[j]])) - m) / z * scale;
    }
  } else {
    A sum = A(0);
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = best_id[j];
      sum += (w[j] = p.by_logit() ? moe_score(A(to_acc(l[e])), p.score) : s.score[size_t(e)]);
    }
    const A denom = p.renormalize ? sum + renorm_eps<A>(p.score) : A(1);
    for (int64_t j = 0; j < k; ++j) w[j] = w[j] / denom * scale;
  }
  for (int64_t j = 0; j < k; ++j) ids[j] = best_id[j];
}

}  // namespace

void moe_route(const Array& logits, const RouteParams& p, const Array& bias, const Array& weights, const Array& ids,
               Stream) {
  with_route_args(logits, p, bias, weights, ids, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T* l = static_cast<const T*>(logits.data);
    const A* b = p.has_bias ? static_cast<const A*>(bias.data) : nullptr;
    A* w = static_cast<A*>(weights.data);
    int32_t* out = static_cast<int32_t*>(ids.data);
    const int64_t grain = std::max<int64_t>(1, 16384 / p.experts);
    parallel_for(p.tokens, grain, [&](int64_t begin, int64_t end) {
      RowScratch<T, A> scratch(p);
      for (int64_t t = begin; t < end; ++t) route_row(l + t * p.experts, b, p, scratch, w + t * p.k, out + t * p.k);
    });
  });
}

}  // namespace ck::CK_BACKEND
