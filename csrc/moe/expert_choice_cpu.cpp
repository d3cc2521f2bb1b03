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

template <class T_>
void run(const Array& scores, int64_t T, int64_t E, int64_t C, const Array& weights, const Array& token_ids) {
  using A = acc_t<T_>;
  using U = moe::order_t<A>;
  const T_* x = static_cast<const T_*>(scores.data);
  std::vector<A> maxes(static_cast<size_t>(T)), log_sums(static_cast<size_t>(T));
  parallel_for(T, 256, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const moe::RowStats<A> st = moe::row_stats(x + t * E, E);
      maxes[size_t(t)] = st.max;
      log_sums[size_t(t)] = st.log_sum;
    }
  });
  A* w = static_cast<A*>(weights.data);
  int32_t* ids = static_cast<int32_t*>(token_ids.data);
  const int64_t blocks = (E + kBlock - 1) / kBlock;
  parallel_for(blocks, 1, [&](int64_t first, int64_t last) {
    std::vector<Entry<U>> heaps(size_t(kBlock * C));
    for (int64_t blk = first; blk < last; ++blk) {
      const int64_t e0 = blk * kBlock, width = std::min(kBlock, E - e0);
      int64_t size[kBlock] = {};
      U worst[kBlock] = {};
      for (int64_t t = 0; t < T; ++t) {
        const T_* row = x + t * E + e0;
        const A m = maxes[size_t(t)], ls = log_sums[size_t(t)];
        U keys[kBlock];
        for (int64_t l = 0; l < width; ++l) keys[l] = moe::order_key(moe::choice_key(row[l], m, ls));
        for (int64_t l = 0; l < width; ++l) {
          Entry<U>* heap = heaps.data() + l * C;
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
