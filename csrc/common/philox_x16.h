// Philox4x32-10 on 16 counters at once with AVX-512: lane l computes exactly philox4x32_10 of counter
// (c0[l], c1[l], c2[l], c3[l]) and key (k0, k1) (csrc/common/philox.h). Host only, inside CK_AVX512 code.
#pragma once

#include "cpu_features.h"

#ifdef CK_AVX512

namespace ck {

struct Philox4x32x16 {
  __m512i v[4];
};

// 32x32 -> 64-bit products of 16 lanes: the even and the odd lanes' products recombined into the low
// words (returned) and the high words (*hi).
CK_AVX512 inline __m512i mulhilo_x16(__m512i m, __m512i x, __m512i* hi) {
  const __m512i even = _mm512_mul_epu32(x, m), odd = _mm512_mul_epu32(_mm512_srli_epi64(x, 32), m);
  *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  return _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

CK_AVX512 inline Philox4x32x16 philox4x32_10_x16(Philox4x32x16 ctr, uint32_t key0, uint32_t key1) {
  const __m512i m0 = _mm512_set1_epi32(int(0xD2511F53u)), m1 = _mm512_set1_epi32(int(0xCD9E8D57u));
  __m512i c0 = ctr.v[0], c1 = ctr.v[1], c2 = ctr.v[2], c3 = ctr.v[3];
  for (int round = 0; round < 10; ++round) {
    __m512i hi0, hi1;
    const __m512i lo0 = mulhilo_x16(m0, c0, &hi0), lo1 = mulhilo_x16(m1, c2, &hi1);
    c0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32(int(key0)));
    c1 = lo1;
    c2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32(int(key1)));
    c3 = lo0;
    key0 += 0x9E3779B9u;
    key1 += 0xBB67AE85u;
  }
  return Philox4x32x16{{c0, c1, c2, c3}};
}

// philox(seed, step, a_l, b) of csrc/common/philox.h for 16 values a_l at once.
CK_AVX512 inline Philox4x32x16 philox_x16(uint64_t seed, uint64_t step, __m512i a, uint32_t b) {
  const Philox4x32x16 ctr{{a, _mm512_set1_epi32(int(b)), _mm512_set1_epi32(int(uint32_t(step))),
                           _mm512_set1_epi32(int(uint32_t(step >> 32)))}};
  return philox4x32_10_x16(ctr, uint32_t(seed), uint32_t(seed >> 32));
}

}  // namespace ck

#endif
