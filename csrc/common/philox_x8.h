// Philox4x32-10 on 8 counters per vector, each in the low half of a 64-bit lane (AVX-512): a 32x32 -> 64
// multiply (vpmuludq) then gives a round's low word (the product's low half) and high word (a shift)
// with no blend, and a three-way XOR (vpternlogq) adds the key: 6 vector operations per 8 counters and
// round, against 9 per 8 with 16 counters per vector. The high halves of the lanes carry junk that no
// multiply reads and the final packing drops. Lane l computes exactly philox4x32_10 (csrc/common/philox.h)
// of counter (a0 + l, b, step, step >> 32) and key seed. Host only, inside CK_AVX512 code.
#pragma once

#include "cpu_features.h"

#ifdef CK_AVX512

#include <cstdint>

namespace ck {

// The ten rounds on G groups of 8 counters (a[g] in the low halves of 64-bit lanes; the other three
// counter words b, step, step >> 32 the same in every lane), leaving the output words in c0..c3. As the
// counter's last three words are lane-invariant, half of the first two rounds is scalar: round 1's
// product of counter word 2, round 2's of word 0 (then a round-1 output of scalars only).
template <int G>
CK_AVX512 inline void philox_x8(const __m512i* a, uint32_t b, uint64_t step, uint64_t seed, __m512i* c0, __m512i* c1,
                                __m512i* c2, __m512i* c3) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  const __m512i m0 = _mm512_set1_epi64(M0), m1 = _mm512_set1_epi64(M1);
  uint32_t key0 = uint32_t(seed), key1 = uint32_t(seed >> 32);
  // round 1: (a, b, s0, s1) -> (hi(M1 s0) ^ b ^ k0, lo(M1 s0), hi(M0 a) ^ s1 ^ k1, lo(M0 a))
  const uint64_t q1 = uint64_t(M1) * uint32_t(step);
  const uint32_t r1c0 = uint32_t(q1 >> 32) ^ b ^ key0, r1c1 = uint32_t(q1);
  const __m512i r1k = _mm512_set1_epi64(uint32_t(step >> 32) ^ key1);
  key0 += W0;
  key1 += W1;
  // round 2: (r1c0, r1c1, v2, v3) -> (hi(M1 v2) ^ r1c1 ^ k0, lo(M1 v2), hi(M0 r1c0) ^ v3 ^ k1, lo(M0 r1c0))
  const uint64_t q0 = uint64_t(M0) * r1c0;
  const __m512i r2k0 = _mm512_set1_epi64(r1c1 ^ key0), r2k1 = _mm512_set1_epi64(uint32_t(q0 >> 32) ^ key1);
  const __m512i r2c3 = _mm512_set1_epi64(uint32_t(q0));
  for (int g = 0; g < G; ++g) {
    const __m512i p0 = _mm512_mul_epu32(a[g], m0);
    const __m512i v2 = _mm512_xor_si512(_mm512_srli_epi64(p0, 32), r1k);  // v3 = p0 (low half)
    const __m512i p1 = _mm512_mul_epu32(v2, m1);
    c0[g] = _mm512_xor_si512(_mm512_srli_epi64(p1, 32), r2k0);
    c1[g] = p1;
    c2[g] = _mm512_xor_si512(p0, r2k1);
    c3[g] = r2c3;
  }
  key0 += W0;
  key1 += W1;
  for (int round = 2; round < 10; ++round) {
    const __m512i k0 = _mm512_set1_epi64(key0), k1 = _mm512_set1_epi64(key1);
    for (int g = 0; g < G; ++g) {
      const __m512i p0 = _mm512_mul_epu32(c0[g], m0), p1 = _mm512_mul_epu32(c2[g], m1);
      c0[g] = _mm512_ternarylogic_epi64(_mm512_srli_epi64(p1, 32), c1[g], k0, 0x96);  // hi1 ^ c1 ^ key0
      c2[g] = _mm512_ternarylogic_epi64(_mm512_srli_epi64(p0, 32), c3[g], k1, 0x96);  // hi0 ^ c3 ^ key1
      c1[g] = p1;  // lo1 in the low half
      c3[g] = p0;  // lo0
    }
    key0 += W0;
    key1 += W1;
  }
}

// words[4 (g 8 + l) + j] = philox(seed, step, a0 + g 8 + l, b).v[j] for g < G, l < 8: the words of
// 8 G consecutive counters in counter order (a0 + 8 G - 1 must not pass 2^32 - 1).
template <int G>
CK_AVX512 inline void philox_words_x8(uint64_t seed, uint64_t step, uint32_t a0, uint32_t b, uint32_t* words) {
  const __m512i lane = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
  __m512i a[G], c0[G], c1[G], c2[G], c3[G];
  for (int g = 0; g < G; ++g) a[g] = _mm512_add_epi64(_mm512_set1_epi64(int64_t(a0) + 8 * g), lane);
  philox_x8<G>(a, b, step, seed, c0, c1, c2, c3);
  const __m512i first = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11), second = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
  for (int g = 0; g < G; ++g) {
    // 64-bit lanes (v0, v1) and (v2, v3) of each counter, then counter by counter
    const __m512i a = _mm512_mask_blend_epi32(0xAAAA, c0[g], _mm512_slli_epi64(c1[g], 32));
    const __m512i z = _mm512_mask_blend_epi32(0xAAAA, c2[g], _mm512_slli_epi64(c3[g], 32));
    _mm512_storeu_si512(words + 32 * g, _mm512_permutex2var_epi64(a, first, z));
    _mm512_storeu_si512(words + 32 * g + 16, _mm512_permutex2var_epi64(a, second, z));
  }
}

// philox(seed, step, a_l, b).v[0] for the 16 counters a_l of a (lanes in order): two groups of 8.
CK_AVX512 inline __m512i philox_v0_x16(uint64_t seed, uint64_t step, __m512i a, uint32_t b) {
  const __m512i lanes[2] = {_mm512_cvtepu32_epi64(_mm512_castsi512_si256(a)),
                            _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(a, 1))};
  __m512i c0[2], c1[2], c2[2], c3[2];
  philox_x8<2>(lanes, b, step, seed, c0, c1, c2, c3);
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(c0[0])), _mm512_cvtepi64_epi32(c0[1]), 1);
}

}  // namespace ck

#endif
