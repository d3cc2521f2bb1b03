// Expert choice on the CPU: a pass over the rows for their statistics (max, log-sum), then blocks of 16
// experts (one cache line of a float32 row) swept over the tokens, each expert keeping candidates for its
// C best tokens (a buffer of 2C, pruned to the C best by nth_element when full: O(T) per expert), finally
// the C best sorted best first. No sort of the T tokens.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")  // the same roundings as the GPU (balance.h)
#endif

#include <algorithm>
#include <vector>

#include "../common/parallel.h"
#include "balance_rows.h"
#include "expert_choice.h"
#include "small_work.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int64_t kBlock = 16;
constexpr int64_t kPrefetchRows = 16;

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

// The candidates of one expert: a buffer of up to 2C entries; a token enters only when it beats the C-th
// best seen so far (`worst`: 0, below every key, until the buffer first fills); a full buffer keeps its C
// best (std::nth_element, O(C)). Each entry costs O(1) amortised, and the buffer ends holding the C best.
template <class U>
CK_MOE_INLINE U keep_best(Entry<U>* entries, int64_t& size, int64_t C) {
  std::nth_element(entries, entries + (C - 1), entries + size, better<U>);
  size = C;
  return entries[C - 1].key;
}

// Feeds tokens 0..T-1 to the candidates of experts e0 .. e0 + width - 1 (expert l's buffer at buffers + 2 C l).
template <class T_>
CK_MOE_INLINE void sweep_impl(const T_* x, const acc_t<T_>* maxes, const acc_t<T_>* log_sums, int64_t T, int64_t E,
                              int64_t C, int64_t e0, int64_t width, Entry<moe::order_t<acc_t<T_>>>* buffers) {
  using A = acc_t<T_>;
  using U = moe::order_t<A>;
  int64_t size[kBlock] = {};
  U worst[kBlock] = {};  // order keys are > 0 (order_key(-inf) = 0x007fffff...)
  for (int64_t t = 0; t < T; ++t) {
    const T_* row = x + t * E + e0;
    // rows lie E elements apart: too far for the hardware prefetcher once E reaches a few hundred bytes
    if (t + kPrefetchRows < T) __builtin_prefetch(row + kPrefetchRows * E);
    const A m = maxes[t], ls = log_sums[t];
    U keys[kBlock];
    for (int64_t l = 0; l < kBlock; ++l)
      keys[l] = l < width ? moe::order_key(moe::choice_key(row[l < width ? l : 0], m, ls)) : U(0);
    // tokens come in index order, so a key equal to the C-th best loses: only a larger key can enter
    bool any = false;
    for (int64_t l = 0; l < kBlock; ++l) any |= keys[l] > worst[l];
    if (!any) continue;
    for (int64_t l = 0; l < width; ++l) {
      if (keys[l] <= worst[l]) continue;
      Entry<U>* entries = buffers + 2 * C * l;
      entries[size[l]++] = {keys[l], int32_t(t)};
      if (size[l] == 2 * C) worst[l] = keep_best(entries, size[l], C);
    }
  }
  for (int64_t l = 0; l < width; ++l)
    if (size[l] > C) keep_best(buffers + 2 * C * l, size[l], C);
}

#ifdef CK_AVX512
template <class T_>
CK_AVX512 void sweep_avx512(const T_* x, const acc_t<T_>* maxes, const acc_t<T_>* log_sums, int64_t T, int64_t E,
                            int64_t C, int64_t e0, int64_t width, Entry<moe::order_t<acc_t<T_>>>* buffers) {
  sweep_impl(x, maxes, log_sums, T, E, C, e0, width, buffers);
}
#endif

template <class T_>
void sweep(const T_* x, const acc_t<T_>* maxes, const acc_t<T_>* log_sums, int64_t T, int64_t E, int64_t C,
           int64_t e0, int64_t width, Entry<moe::order_t<acc_t<T_>>>* buffers) {
#ifdef CK_AVX512
  if (has_avx512()) return sweep_avx512(x, maxes, log_sums, T, E, C, e0, width, buffers);
#endif
  sweep_impl(x, maxes, log_sums, T, E, C, e0, width, buffers);
}

template <class T_>
void run(const Array& scores, int64_t T, int64_t E, int64_t C, const Array& weights, const Array& token_ids) {
  using A = acc_t<T_>;
  using U = moe::order_t<A>;
  const T_* x = static_cast<const T_*>(scores.data);
  std::vector<A> maxes(static_cast<size_t>(T)), log_sums(static_cast<size_t>(T));
  moe::for_by_work(T, 256, T * E, [&](int64_t begin, int64_t end) {
    moe::stats_rows(x, begin, end, E, maxes.data(), log_sums.data(), static_cast<A*>(nullptr));
  });
  A* w = static_cast<A*>(weights.data);
  int32_t* ids = static_cast<int32_t*>(token_ids.data);
  // experts per sweep: kBlock, or fewer when that leaves the second thread idle on a large pass (each
  // expert's candidates see the tokens in the same order whatever its block: the same result). The work
  // is the sweep's T E keys plus each expert's final sort of its C best (C log C, counted as 16 C): at
  // T = 8192, E = 8, C = 2048 the sorts are most of it.
  const int64_t work = T * E + 16 * E * C;
  int64_t per_block = kBlock;
  if (E > 1 && E <= kBlock && work > moe::kParallelWork && max_threads() > 1) per_block = (E + 1) / 2;
  const int64_t blocks = (E + per_block - 1) / per_block;
  moe::for_by_work(blocks, 1, work, [&](int64_t first, int64_t last) {
    std::vector<Entry<U>> buffers(size_t(2 * kBlock * C));
    for (int64_t blk = first; blk < last; ++blk) {
      const int64_t e0 = blk * per_block, width = std::min(per_block, E - e0);
      if (C > 0) sweep(x, maxes.data(), log_sums.data(), T, E, C, e0, width, buffers.data());
      for (int64_t l = 0; l < width; ++l) {
        Entry<U>* best = buffers.data() + 2 * C * l;
        std::sort(best, best + C, better<U>);  // the C best, best first
        const int64_t e = e0 + l;
        for (int64_t c = 0; c < C; ++c) {
          w[e * C + c] = moe::exp_acc(moe::from_order_key<A>(best[c].key));
          ids[e * C + c] = best[c].token;
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
