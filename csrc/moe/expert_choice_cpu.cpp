// Expert choice on the CPU: a pass over the rows for their statistics (max, log-sum), then blocks of 16
// experts (one cache line of a float32 row) swept over the tokens, each expert keeping its C best tokens
// in a bounded heap (a token enters only when it beats the worst kept one, so O(T + C log C log(T/C)) on
// typical data and O(T log C) at worst), finally sorted best first. No full sort of the T tokens.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")  // the same roundings as the GPU (balance.h)
#endif

#include <algorithm>
#include <vector>

#include "../common/parallel.h"
#include "balance_rows.h"
#include "expert_choice.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int64_t kBlock = 16;

template <class U>
struct Entry {
  U key;
  int32_t token;
};

// a comes first when its key is larger, or equal with a lower token index
template <class U>
bool better(const Entry<U>& a, const Entry<U>& b) {
  return a.key != b.key ? a.key > b.key : a.token < b.token;
}

// Feeds tokens 0..T-1 to the heaps of experts e0 .. e0 + width - 1 (heap l at heaps + l C).
template <class T_>
CK_MOE_INLINE void sweep_impl(const T_* x, const acc_t<T_>* maxes, const acc_t<T_>* log_sums, int64_t T, int64_t E,
                              int64_t C, int64_t e0, int64_t width, Entry<moe::order_t<acc_t<T_>>>* heaps) {
  using A = acc_t<T_>;
  using U = moe::order_t<A>;
  int64_t size[kBlock] = {};
  U worst[kBlock] = {};
  for (int64_t t = 0; t < T; ++t) {
    const T_* row = x + t * E + e0;
    const A m = maxes[t], ls = log_sums[t];
    U keys[kBlock];
    for (int64_t l = 0; l < width; ++l) keys[l] = moe::order_key(moe::choice_key(row[l], m, ls));
    for (int64_t l = 0; l < width; ++l) {
      Entry<U>* heap = heaps + l * C;
      if (size[l] < C) {  // the worst kept entry sits at the root
        heap[size[l]++] = {keys[l], int32_t(t)};
        std::push_heap(heap, heap + size[l], better<U>);
        worst[l] = heap[0].key;
      } else if (C > 0 && keys[l] > worst[l]) {  // equal keys lose: their token index is larger
        std::pop_heap(heap, heap + C, better<U>);
        heap[C - 1] = {keys[l], int32_t(t)};
        std::push_heap(heap, heap + C, better<U>);
        worst[l] = heap[0].key;
      }
    }
  }
}

#ifdef CK_AVX512
template <class T_>
CK_AVX512 void sweep_avx512(const T_* x, const acc_t<T_>* maxes, const acc_t<T_>* log_sums, int64_t T, int64_t E,
                            int64_t C, int64_t e0, int64_t width, Entry<moe::order_t<acc_t<T_>>>* heaps) {
  sweep_impl(x, maxes, log_sums, T, E, C, e0, width, heaps);
}
#endif

template <class T_>
void sweep(const T_* x, const acc_t<T_>* maxes, const acc_t<T_>* log_sums, int64_t T, int64_t E, int64_t C,
           int64_t e0, int64_t width, Entry<moe::order_t<acc_t<T_>>>* heaps) {
#ifdef CK_AVX512
  if (has_avx512()) return sweep_avx512(x, maxes, log_sums, T, E, C, e0, width, heaps);
#endif
  sweep_impl(x, maxes, log_sums, T, E, C, e0, width, heaps);
}

template <class T_>
void run(const Array& scores, int64_t T, int64_t E, int64_t C, const Array& weights, const Array& token_ids) {
  using A = acc_t<T_>;
  using U = moe::order_t<A>;
  const T_* x = static_cast<const T_*>(scores.data);
  std::vector<A> maxes(static_cast<size_t>(T)), log_sums(static_cast<size_t>(T));
  parallel_for(T, 256, [&](int64_t begin, int64_t end) {
    moe::stats_rows(x, begin, end, E, maxes.data(), log_sums.data(), static_cast<A*>(nullptr));
  });
  A* w = static_cast<A*>(weights.data);
  int32_t* ids = static_cast<int32_t*>(token_ids.data);
  const int64_t blocks = (E + kBlock - 1) / kBlock;
  parallel_for(blocks, 1, [&](int64_t first, int64_t last) {
    std::vector<Entry<U>> heaps(size_t(kBlock * C));
    for (int64_t blk = first; blk < last; ++blk) {
      const int64_t e0 = blk * kBlock, width = std::min(kBlock, E - e0);
      sweep(x, maxes.data(), log_sums.data(), T, E, C, e0, width, heaps.data());
      for (int64_t l = 0; l < width; ++l) {
        Entry<U>* heap = heaps.data() + l * C;
        std::sort_heap(heap, heap + C, better<U>);  // best first
        const int64_t e = e0 + l;
        for (int64_t c = 0; c < C; ++c) {
          w[e * C + c] = moe::exp_acc(moe::from_order_key<A>(heap[c].key));
          ids[e * C + c] = heap[c].token;
        }
      }
    }
  });
}

}  // namespace

void expert_choice(const Array& scores, int64_t T, int64_t E, int64_t C, const Array& weights,
                   const Array& token_ids, Stream) {
  moe::check_expert_choice(scores, T, E, C, weights, token_ids);
  dispatch_float(scores.dtype, "scores", [&](auto tag) {
    run<typename decltype(tag)::type>(scores, T, E, C, weights, token_ids);
  });
}

}  // namespace ck::CK_BACKEND
