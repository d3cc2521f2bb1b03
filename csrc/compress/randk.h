// Host+device math of rand-k: a keyed pseudo-random permutation of [0, size).
//
// S = { perm(0), ..., perm(k-1) } is a set of k distinct indices, each computed independently in O(1), so
// drawing S costs O(k) whatever the size, runs in parallel on CPU threads and GPU threads alike, and gives
// the same S on every backend and every worker that knows (seed, step).
//
// perm is a balanced 4-round Feistel network on 2h-bit words (4 rounds make a strong pseudo-random
// permutation: Luby and Rackoff, 1988) whose round function is Philox4x32-10 keyed by seed, with counter
// (half-word, round, step). Cycle walking (re-encrypting until the word falls below size) restricts it to
// [0, size) and keeps it a permutation; since 2^2h < 4 size, a walk takes fewer than 4 steps on average.
#pragma once

#include "../common/philox.h"

namespace ck {

struct FeistelPermutation {
  uint64_t size;
  uint64_t seed;
  uint64_t step;
  int half_bits;  // h: each half of the word has h bits, 2^(2h) >= size

  CK_HD static FeistelPermutation make(uint64_t size, uint64_t seed, uint64_t step) {
    int bits = 0;
    while ((uint64_t(1) << bits) < size) ++bits;
    const int half = bits < 2 ? 1 : (bits + 1) / 2;
    return FeistelPermutation{size, seed, step, half};
  }

  CK_HD uint64_t encrypt(uint64_t word) const {
    const uint32_t mask = uint32_t((uint64_t(1) << half_bits) - 1);
    uint32_t left = uint32_t(word >> half_bits) & mask, right = uint32_t(word) & mask;
    for (uint32_t round = 0; round < 4; ++round) {
      const uint32_t f = philox(seed, step, right, round).v[0] & mask;
      const uint32_t next_right = left ^ f;
      left = right;
      right = next_right;
    }
    return (uint64_t(left) << half_bits) | right;
  }

  // The i-th element of the permutation of [0, size); requires i < size.
  CK_HD uint64_t operator()(uint64_t i) const {
    uint64_t word = encrypt(i);
    while (word >= size) word = encrypt(word);
    return word;
  }
};

// Factor that makes rand-k unbiased: E[(size/k) x_S] = x.
CK_HD double randk_scale(int64_t size, int64_t k, bool unbiased) {
  return unbiased && k > 0 ? double(size) / double(k) : 1.0;
}

}  // namespace ck
