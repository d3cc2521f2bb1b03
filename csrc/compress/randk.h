// Host+device math of rand-k: a keyed pseudo-random permutation of [0, size).
//
// S = { perm(0), ..., perm(k-1) } is a set of k distinct indices, each computed independently in O(1), so
// drawing S costs O(k) whatever the size, runs in parallel on CPU threads and GPU threads alike, and gives
// the same S on every backend and every worker that knows (seed, step).
//
// perm is a 4-round Feistel network on words of `bits` = ceil(log2 size) bits (at least 1), split into a
// high part of hi = bits - bits/2 bits and a low part of lo = bits/2 bits. Rounds alternate: even rounds
// xor into the high part a function of the low part, odd rounds the reverse (4 rounds make a strong
// pseudo-random permutation: Luby and Rackoff, 1988). The round function is Philox4x32-10 keyed by seed,
// counter (other part, round, step). Cycle walking (re-encrypting until the word falls below size)
// restricts it to [0, size) and keeps it a permutation; since 2^bits < 2 size, a walk takes fewer than 2
// encryptions on average.
#pragma once

#include "../common/philox.h"

namespace ck {

struct FeistelPermutation {
  uint64_t size;
  uint64_t seed;
  uint64_t step;
  int bits;  // word width: 2^bits >= size

  CK_HD static FeistelPermutation make(uint64_t size, uint64_t seed, uint64_t step) {
    int bits = 1;
    while ((uint64_t(1) << bits) < size) ++bits;
    return FeistelPermutation{size, seed, step, bits};
  }

  CK_HD int lo_bits() const { return bits / 2; }
  CK_HD uint32_t lo_mask() const { return uint32_t((uint64_t(1) << lo_bits()) - 1); }
  CK_HD uint32_t hi_mask() const { return uint32_t((uint64_t(1) << (bits - lo_bits())) - 1); }

  // Round `round` (0..3) on the split word: even rounds update hi from lo, odd rounds lo from hi.
  CK_HD void round(uint32_t round, uint32_t& hi, uint32_t& lo) const {
    if (round % 2 == 0)
      hi ^= philox(seed, step, lo, round).v[0] & hi_mask();
    else
      lo ^= philox(seed, step, hi, round).v[0] & lo_mask();
  }

  CK_HD uint64_t encrypt(uint64_t word) const {
    uint32_t hi = uint32_t(word >> lo_bits()), lo = uint32_t(word) & lo_mask();
    for (uint32_t r = 0; r < 4; ++r) round(r, hi, lo);
    return (uint64_t(hi) << lo_bits()) | lo;
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
