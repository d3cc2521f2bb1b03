// Runtime CPU dispatch: the default build runs on any x86-64; hot loops also have AVX-512 versions
// (compiled with CK_AVX512) that run where the CPU has it.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized (their _mm512_undefined_* placeholders).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define CK_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,bmi2")))
#endif

#include <cstdlib>

// Forced inlining, for the helpers of loops compiled twice (baseline and CK_AVX512): a helper left as a
// call is compiled once, for the baseline, so the AVX-512 copy loses its wide code; and a call in a hot
// loop can cost registers (graph_attention's row loop ran 1.7x slower with its prefetch helper called).
#if defined(__GNUC__)
#define CK_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define CK_ALWAYS_INLINE inline
#endif

namespace ck {

// True where the AVX-512 versions (F, VL, DQ, BW) and BMI2 can run, unless the environment variable
// COMMKERNELS_DISABLE_AVX512 is set (read once; the tests use it to check the baseline paths too).
inline bool has_avx512() {
#ifdef CK_AVX512
  static const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                                __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
                                __builtin_cpu_supports("bmi2") && !std::getenv("COMMKERNELS_DISABLE_AVX512");
  return supported;
#else
  return false;
#endif
}

}  // namespace ck
