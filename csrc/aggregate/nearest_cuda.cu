// nearest.h on the GPU: one thread per coordinate, its column in a local array (theta <= 128 here).
#include "../common/cuda_utils.cuh"
#include "nearest.h"
#include "rows_cuda.cuh"

namespace ck::CK_BACKEND {
namespace {

constexpr int kMaxTheta = 128;

template <class T>
__global__ void nearest_kernel(RowView<T> rows, int beta, T* out) {
  using A = acc_t<T>;
  A v[kMaxTheta];
  const int theta = int(rows.n);
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < rows.d; j += int64_t(gridDim.x) * blockDim.x) {
    for (int i = 0; i < theta; ++i) v[i] = to_acc(rows.row(i)[j]);
    nearest_sort(v, theta);
    out[j] = from_acc<T>(nearest_median_mean_sorted(v, theta, beta));
  }
}

}  // namespace

void nearest_median_mean(const Rows& rows, int64_t beta, const Array& out, Stream stream) {
  check_nearest_args(rows, beta, out);
  check(rows.n <= kMaxTheta, "X: at most 128 selected workers on CUDA, got " + std::to_string(rows.n));
  if (rows.d == 0) return;
  DeviceGuard guard(stream);
  const cudaStream_t s = cuda_stream(stream);
  dispatch_float(rows.dtype, "X", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const DeviceRows dev(rows, s);
    nearest_kernel<T><<<grid_for(rows.d, 128), 128, 0, s>>>(dev.view<T>(), int(beta), static_cast<T*>(out.data));
    check_launch();
  });
}

}  // namespace ck::CK_BACKEND
