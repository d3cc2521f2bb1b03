#include "backend_info.h"
#include "cuda_utils.cuh"

namespace ck::CK_BACKEND {

BackendInfo backend_info() {
  BackendInfo info;
  info.backend = "cuda";
  info.compiler = CK_COMPILER;
  info.build_type = CK_BUILD_TYPE;
  info.flags = CK_FLAGS;
  info.cuda_archs = CK_CUDA_ARCHS;
  const cudaError_t err = cudaGetDeviceCount(&info.device_count);
  if (err != cudaSuccess) {
    info.device_count = 0;
    info.device_error = cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error so later calls report their own
  }
#ifdef CK_SANITIZED
  info.sanitized = true;
#endif
  return info;
}

}  // namespace ck::CK_BACKEND
