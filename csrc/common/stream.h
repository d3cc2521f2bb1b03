// The caller's CUDA stream (cudaStream_t as an integer) and device; the CPU backend ignores both.
#pragma once

#include <cstdint>

namespace ck {

struct Stream {
  uintptr_t handle = 0;
  int device = 0;
};

}  // namespace ck
