// What a compiled backend module reports about itself (commkernels.info()).
#pragma once

#include <string>

namespace ck::CK_BACKEND {

struct BackendInfo {
  std::string backend;        // "cpu" or "cuda"
  std::string compiler;       // compiler id and version
  std::string build_type;     // CMAKE_BUILD_TYPE
  std::string flags;          // the optimisation flags the kernels were built with
  bool openmp = false;        // CPU: built with OpenMP
  int num_threads = 1;        // CPU: threads a parallel region uses now
  std::string simd;           // CPU: the instruction set the dispatched hot loops use on this machine
  std::string cuda_archs;     // CUDA: compiled architectures
  int device_count = 0;       // CUDA: visible GPUs (0 when none or when the driver is missing)
  std::string device_error;   // CUDA: why no GPU is usable, when none is
  bool sanitized = false;     // built with AddressSanitizer + UndefinedBehaviorSanitizer
};

BackendInfo backend_info();

}  // namespace ck::CK_BACKEND
