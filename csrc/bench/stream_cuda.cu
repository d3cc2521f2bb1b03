#include "../common/cuda_utils.cuh"
#include "api.h"

namespace ck::CK_BACKEND {
namespace {

__global__ void triad_kernel(float* a, const float* b, const float* c, float scalar, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    a[i] = b[i] + scalar * c[i];
}

}  // namespace

void stream_triad(const Array& a, const Array& b, const Array& c, float scalar, Stream stream) {
  check(a.size == b.size && a.size == c.size, "stream_triad: a, b and c need the same size");
  if (a.size == 0) return;
  DeviceGuard guard(stream);
  triad_kernel<<<grid_for(a.size, 256, 1 << 16), 256, 0, cuda_stream(stream)>>>(
      a.as<float>("a"), b.as<float>("b"), c.as<float>("c"), scalar, a.size);
  check_launch();
}

}  // namespace ck::CK_BACKEND
