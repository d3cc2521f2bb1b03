// Sparse aggregation on the GPU: one block per output tile. For each message in list order, the block
// finds (binary search) the message's entries that fall in its tile and adds them into the tile's
// accumulators in shared memory; a message's indices are distinct, so its adds never collide, and the
// barrier between messages fixes the order of the sum. No atomics on values; the same order as the CPU.
#include <algorithm>
#include <vector>

#include "../common/cuda_utils.cuh"
#include "aggregate_sparse.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int kThreads = 256;
constexpr int kTile = 2048;

struct Messages {
  const void* const* values;
  const void* const* indices;
  const int64_t* count;
  int64_t messages;
};

template <class Index>
__device__ int64_t lower_bound(const Index* idx, int64_t k, int64_t value) {
  int64_t lo = 0, hi = k;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (int64_t(idx[mid]) < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// bad[0] <- 1 + the first message whose indices are not strictly ascending in [0, size) (0 if none).
template <class Index>
__global__ void check_kernel(Messages msgs, int64_t size, int* bad) {
  const int64_t m = blockIdx.y;
  const Index* idx = static_cast<const Index*>(msgs.indices[m]);
  const int64_t k = msgs.count[m];
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < k; j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = int64_t(idx[j]);
    if (i < 0 || i >= size || (j > 0 && int64_t(idx[j - 1]) >= i)) atomicMin(bad, int(m));
  }
}

template <class T, class Index>
__global__ void aggregate_kernel(Messages msgs, int64_t size, bool average, T* __restrict__ out) {
  using A = acc_t<T>;
  __shared__ A acc[kTile];
  __shared__ int64_t range[2];
  const int64_t tile = int64_t(blockIdx.x) * kTile;
  const int64_t len = min(int64_t(kTile), size - tile);
  for (int j = threadIdx.x; j < len; j += blockDim.x) acc[j] = A(0);
  for (int64_t m = 0; m < msgs.messages; ++m) {
    const Index* idx = static_cast<const Index*>(msgs.indices[m]);
    const T* val = static_cast<const T*>(msgs.values[m]);
    if (threadIdx.x < 2) range[threadIdx.x] = lower_bound(idx, msgs.count[m], tile + threadIdx.x * len);
    __syncthreads();  // also orders the previous message's adds before this one's
    for (int64_t j = range[0] + threadIdx.x; j < range[1]; j += blockDim.x) acc[int64_t(idx[j]) - tile] += A(to_acc(val[j]));
    __syncthreads();
  }
  const A divisor = A(msgs.messages);
  for (int j = threadIdx.x; j < len; j += blockDim.x) out[tile + j] = from_acc<T>(average ? acc[j] / divisor : acc[j]);
}

}  // namespace

void sparse_aggregate(const std::vector<Array>& values, const std::vector<Array>& indices, int64_t size,
                      bool average, const Array& out, Stream stream) {
  with_sparse_aggregate_args(values, indices, size, out, [&](auto vtag, auto itag) {
    using T = typename decltype(vtag)::type;
    using Index = typename decltype(itag)::type;
    const int64_t count = int64_t(values.size());
    check(count <= 65535, "msgs: at most 65535 messages on CUDA, got " + std::to_string(count));
    DeviceGuard guard(stream);
    const cudaStream_t s = cuda_stream(stream);
    // The messages' pointers and lengths, in one device table: values, indices, then counts.
    std::vector<uint64_t> table(size_t(3 * count));
    int64_t max_k = 0;
    for (int64_t m = 0; m < count; ++m) {
      table[size_t(m)] = reinterpret_cast<uint64_t>(values[size_t(m)].data);
      table[size_t(count + m)] = reinterpret_cast<uint64_t>(indices[size_t(m)].data);
      table[size_t(2 * count + m)] = uint64_t(indices[size_t(m)].size);
      max_k = std::max(max_k, indices[size_t(m)].size);
    }
    DeviceBuffer<uint64_t> device_table(table.size(), s);
    DeviceBuffer<int> bad(1, s);
    CK_CUDA_CHECK(cudaMemcpyAsync(device_table.get(), table.data(), table.size() * sizeof(uint64_t),
                                  cudaMemcpyHostToDevice, s));
    const int none = int(count);
    CK_CUDA_CHECK(cudaMemcpyAsync(bad.get(), &none, sizeof(int), cudaMemcpyHostToDevice, s));
    const uint64_t* t = device_table.get();
    const Messages msgs{reinterpret_cast<const void* const*>(t), reinterpret_cast<const void* const*>(t + count),
                        reinterpret_cast<const int64_t*>(t + 2 * count), count};
    if (max_k > 0) {
      check_kernel<Index><<<dim3(grid_for(max_k, kThreads, 1024), unsigned(count)), kThreads, 0, s>>>(msgs, size, bad.get());
      check_launch();
    }
    int first_bad = none;
    CK_CUDA_CHECK(cudaMemcpyAsync(&first_bad, bad.get(), sizeof(int), cudaMemcpyDeviceToHost, s));
    CK_CUDA_CHECK(cudaStreamSynchronize(s));  // the host copies above must outlive their transfers, too
    check(first_bad == none, bad_indices_message(first_bad, size));
    if (size == 0) return;
    aggregate_kernel<T, Index><<<unsigned((size + kTile - 1) / kTile), kThreads, 0, s>>>(msgs, size, average,
                                                                                        static_cast<T*>(out.data));
    check_launch();
  });
}

}  // namespace ck::CK_BACKEND
