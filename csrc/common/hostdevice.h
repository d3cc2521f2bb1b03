// CK_HD marks functions that are compiled for both the host (C++ / OpenMP) and the device (CUDA).
// The per-element math lives in such functions once, so the CPU tests exercise the arithmetic the GPU runs.
#pragma once

#if defined(__CUDACC__)
#define CK_HD __host__ __device__ __forceinline__
#else
#define CK_HD inline
#endif

#include <cstdint>
#include <cstring>

namespace ck {

// memcpy-based bit cast: works in host and device code and is optimised to a register move.
template <class To, class From>
CK_HD To bit_cast(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast needs equal sizes");
  To to;
  memcpy(&to, &from, sizeof(To));
  return to;
}

}  // namespace ck
