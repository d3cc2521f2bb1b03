// Expert choice on the GPU: one thread per token computes its row statistics; then one block per expert
// radix-selects the key of its C-th best token (8-bit digits, shared-memory histograms with integer
// atomics), gathers the tokens above it and the lowest-index ones equal to it in token order (block scans),
// and places each gathered token at its rank among them (C^2 / blockDim comparisons per thread). Same
// keys as the CPU (balance.h), hence the same tokens in the same order.
#include <cub/block/block_scan.cuh>

#include "../common/cuda_utils.cuh"
#include "expert_choice.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void stats_kernel(const T* __restrict__ x, int64_t T_, int64_t E, acc_t<T>* __restrict__ maxes,
                             acc_t<T>* __restrict__ log_sums) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= T_) return;
  const moe::RowStats<acc_t<T>> st = moe::row_stats(x + t * E, E);
  maxes[t] = st.max;
  log_sums[t] = st.log_sum;
}

template <class T>
__device__ moe::order_t<acc_t<T>> key_of(const T* x, const acc_t<T>* maxes, const acc_t<T>* log_sums, int64_t E,
                                         int64_t t, int64_t e) {
  return moe::order_key(moe::choice_key(x[t * E + e], maxes[t], log_sums[t]));
}

template <class T>
__global__ void select_kernel(const T* __restrict__ x, const acc_t<T>* __restrict__ maxes,
                              const acc_t<T>* __restrict__ log_sums, int64_t T_, int64_t E, int64_t C,
                              moe::order_t<acc_t<T>>* __restrict__ cand_keys, int32_t* __restrict__ cand_tokens,
                              acc_t<T>* __restrict__ weights, int32_t* __restrict__ token_ids) {
  using A = acc_t<T>;
  using U = moe::order_t<A>;
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ int hist[256];
  __shared__ U s_prefix;
  __shared__ int64_t s_need;
  __shared__ typename Scan::TempStorage scan_temp;
  const int64_t e = blockIdx.x;
  // 1. radix select: the key value of the C-th best token, and how many tokens with exactly that key to take
  U prefix = 0, mask = 0;
  int64_t need = C;
  for (int shift = 8 * int(sizeof(U)) - 8; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    for (int64_t t = threadIdx.x; t < T_; t += blockDim.x) {
      const U key = key_of(x, maxes, log_sums, E, t, e);
      if ((key & mask) == prefix) atomicAdd(&hist[int((key >> shift) & 0xff)], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int64_t above = 0;
      int d = 255;
      for (; d > 0 && above + hist[d] < need; --d) above += hist[d];
      s_prefix = prefix | (U(d) << shift);
      s_need = need - above;
    }
    __syncthreads();
    prefix = s_prefix;
    need = s_need;
    mask |= U(0xff) << shift;
    __syncthreads();
  }
  const U kth = prefix;
  // 2. gather, in token order, the tokens above kth and the first `need` equal to it
  U* keys = cand_keys + e * C;
  int32_t* tokens = cand_tokens + e * C;
  int64_t taken = 0, equal_seen = 0;
  for (int64_t tile = 0; tile < T_; tile += blockDim.x) {
    const int64_t t = tile + threadIdx.x;
    U key = 0;
    int equal = 0, above = 0;
    if (t < T_) {
      key = key_of(x, maxes, log_sums, E, t, e);
      above = key > kth;
      equal = key == kth;
    }
    int equal_rank, equal_count;
    Scan(scan_temp).ExclusiveSum(equal, equal_rank, equal_count);
    __syncthreads();
    const int take = above || (equal && equal_seen + equal_rank < need);
    int position, count;
    Scan(scan_temp).ExclusiveSum(take, position, count);
    __syncthreads();
    if (take && taken + position < C) {
      keys[taken + position] = key;
      tokens[taken + position] = int32_t(t);
    }
    taken += count;
    equal_seen += equal_count;
  }
  __syncthreads();
  // 3. each gathered token goes to its rank: larger key first, then lower token index
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
    const U ki = keys[i];
    const int32_t ti = tokens[i];
    int64_t rank = 0;
    for (int64_t j = 0; j < C; ++j) rank += keys[j] > ki || (keys[j] == ki && tokens[j] < ti);
    weights[e * C + rank] = moe::exp_acc(moe::from_order_key<A>(ki));
    token_ids[e * C + rank] = ti;
  }
}

}  // namespace

void expert_choice(const Array& scores, int64_t T, int64_t E, int64_t C, const Array& weights,
                   const Array& token_ids, Stream stream) {
  moe::check_expert_choice(scores, T, E, C, weights, token_ids);
  check(E <= (int64_t(1) << 31) - 1, "scores: too many experts");
  if (C == 0) return;
  dispatch_float(scores.dtype, "scores", [&](auto tag) {
    using T_ = typename decltype(tag)::type;
    using A = acc_t<T_>;
    using U = moe::order_t<A>;
    DeviceGuard guard(stream);
    cudaStream_t s = cuda_stream(stream);
    DeviceBuffer<A> maxes(size_t(T), s), log_sums(size_t(T), s);
    DeviceBuffer<U> keys(size_t(E * C), s);
    DeviceBuffer<int32_t> tokens(size_t(E * C), s);
    const T_* x = static_cast<const T_*>(scores.data);
    stats_kernel<T_><<<unsigned((T + kThreads - 1) / kThreads), kThreads, 0, s>>>(x, T, E, maxes.get(), log_sums.get());
    check_launch();
    select_kernel<T_><<<unsigned(E), kThreads, 0, s>>>(x, maxes.get(), log_sums.get(), T, E, C, keys.get(), tokens.get(),
                                                       static_cast<A*>(weights.data),
                                                       static_cast<int32_t*>(token_ids.data));
    check_launch();
  });
}

}  // namespace ck::CK_BACKEND
