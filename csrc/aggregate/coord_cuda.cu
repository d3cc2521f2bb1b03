// Coordinate-wise rules on the GPU (coord.h): one thread per coordinate. A block's threads each load
// their coordinate's n order keys into their own column of a shared-memory tile (n x blockDim keys; the
// loads of a row are coalesced, a column is conflict-free), run Batcher's network on it in place, and
// reduce it with reduce_column, the function the CPU's vectorised reduction mirrors: the same values.
#include <string>

#include "../common/cuda_utils.cuh"
#include "coord.h"
#include "rows_cuda.cuh"

namespace ck::CK_BACKEND {
namespace {

constexpr int kSharedBytes = 48 * 1024;  // the default dynamic shared memory limit

template <class T>
__global__ void coord_kernel(RowView<T> X, CoordArgs args, T* __restrict__ out) {
  using K = order_key_t<T>;
  extern __shared__ __align__(16) unsigned char shared[];
  const int threads = blockDim.x, n = int(X.n);
  K* col = reinterpret_cast<K*>(shared) + threadIdx.x;
  for (int64_t base = int64_t(blockIdx.x) * threads; base < X.d; base += int64_t(gridDim.x) * threads) {
    const int64_t j = base + threadIdx.x;
    const bool active = j < X.d;
    for (int i = 0; i < n; ++i) col[i * threads] = active ? order_key(X.row(i)[j]) : K(0);
    batcher_network(n, [&](int a, int b) {
      const K x = col[a * threads], y = col[b * threads];
      col[a * threads] = x < y ? x : y;
      col[b * threads] = x < y ? y : x;
    });
    if (active) out[j] = reduce_column<T>(col, threads, n, args);
  }
}

}  // namespace

void coordinate_rule(const Rows& X, const CoordArgs& args, const Array& out, Stream stream) {
  with_coord_args(X, args, out, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using K = order_key_t<T>;
    int threads = 128;
    while (threads > 32 && int64_t(threads) * X.n * int64_t(sizeof(K)) > kSharedBytes) threads /= 2;
    const int64_t bytes = int64_t(threads) * X.n * int64_t(sizeof(K));
    check(bytes <= kSharedBytes, "X: at most " + std::to_string(kSharedBytes / (32 * sizeof(K))) +
                                     " updates of this dtype on CUDA, got " + std::to_string(X.n));
    if (X.d == 0) return;
    DeviceGuard guard(stream);
    const cudaStream_t s = cuda_stream(stream);
    DeviceRows rows(X, s);
    coord_kernel<T><<<grid_for(X.d, threads, 65535), threads, size_t(bytes), s>>>(rows.view<T>(), args,
                                                                                  static_cast<T*>(out.data));
    check_launch();
  });
}

}  // namespace ck::CK_BACKEND
