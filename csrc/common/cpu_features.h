// Runtime CPU dispatch: the default build runs on any x86-64; hot loops also have AVX-512 versions
// (compiled with CK_AVX512) that run where the CPU has it.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized (their _mm512_undefined_* placeholders).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define CK_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,bmi2")))
#if defined(__linux__)
// AMX needs the kernel's leave to use the tile state (arch_prctl below), which only Linux gives this way.
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define CK_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512vl,avx512dq,avx512bw,bmi2")))
#endif
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

// True where the AMX versions can run: the CPU has AMX-TILE and AMX-BF16, the OS saves the tile state (XCR0
// bits 17-18), this process got the kernel's leave to use it (asked once here: ARCH_REQ_XCOMP_PERM for
// XTILEDATA), and the AVX-512 versions run; unless COMMKERNELS_DISABLE_AMX is set (the tests use it to
// check the AVX-512 paths beside the AMX ones).
inline bool has_amx_bf16() {
#ifdef CK_AMX
  static const bool supported = [] {
    if (!has_avx512() || std::getenv("COMMKERNELS_DISABLE_AMX")) return false;
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !((d >> 22) & 1u) || !((d >> 24) & 1u)) return false;
    unsigned xcr0_lo = 0, xcr0_hi = 0;
    __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));  // has_avx512() implies OSXSAVE
    if ((xcr0_lo & (3u << 17)) != (3u << 17)) return false;
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtileData = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtileData) == 0;
  }();
  return supported;
#else
  return false;
#endif
}

}  // namespace ck
