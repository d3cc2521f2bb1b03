// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), a counter-based RNG.
//
// The output is a pure function of (counter, key), computed with 32-bit integer arithmetic, so host and
// device give identical streams and every (seed, step, element) has its own independent draw.
#pragma once

#include "hostdevice.h"

namespace ck {

struct Philox4x32 {
  uint32_t v[4];
};

CK_HD uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
#if defined(__CUDA_ARCH__)
  *hi = __umulhi(a, b);
  return a * b;
#else
  const uint64_t p = uint64_t(a) * uint64_t(b);
  *hi = uint32_t(p >> 32);
  return uint32_t(p);
#endif
}

CK_HD Philox4x32 philox4x32_10(Philox4x32 ctr, uint32_t key0, uint32_t key1) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;  // round multipliers
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;  // Weyl key increments
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo32(M0, ctr.v[0], &hi0);
    const uint32_t lo1 = mulhilo32(M1, ctr.v[2], &hi1);
    ctr = Philox4x32{{hi1 ^ ctr.v[1] ^ key0, lo1, hi0 ^ ctr.v[3] ^ key1, lo0}};
    key0 += W0;
    key1 += W1;
  }
  return ctr;
}

// The stream that every stochastic kernel draws from: key = seed, counter = (a, b, step).
CK_HD Philox4x32 philox(uint64_t seed, uint64_t step, uint32_t a, uint32_t b) {
  return philox4x32_10(Philox4x32{{a, b, uint32_t(step), uint32_t(step >> 32)}}, uint32_t(seed),
                       uint32_t(seed >> 32));
}

}  // namespace ck
