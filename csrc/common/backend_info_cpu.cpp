#include "backend_info.h"

#include "cpu_features.h"
#include "parallel.h"

namespace ck::CK_BACKEND {

BackendInfo backend_info() {
  BackendInfo info;
  info.backend = "cpu";
  info.compiler = CK_COMPILER;
  info.build_type = CK_BUILD_TYPE;
  info.flags = CK_FLAGS;
#ifdef _OPENMP
  info.openmp = true;
#endif
  info.num_threads = max_threads();
  info.simd = has_amx_bf16() ? "avx512 + amx-bf16 (runtime dispatch)"
              : has_avx512()  ? "avx512 (runtime dispatch)"
                              : "baseline x86-64";
#ifdef CK_SANITIZED
  info.sanitized = true;
#endif
  return info;
}

}  // namespace ck::CK_BACKEND
