// Host-side random graph generators (sequential by nature; run once to build a topology). Draws come from
// the project's Philox stream (common/philox.h) keyed by the seed, so a seed gives the same graph on every
// platform.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../common/errors.h"
#include "../common/philox.h"

namespace ck::graph {

// Sequential uniform draws in [0, bound): word q of the stream is word (q mod 4) of
// philox(seed, step = 0x4241 ('BA'), a = q / 4 mod 2^32, b = q / 2^34); the index is
// floor(word * bound / 2^32) (bound < 2^32).
class PhiloxDraws {
 public:
  explicit PhiloxDraws(uint64_t seed) : seed_(seed) {}
  uint32_t next(uint32_t bound) {
    if ((q_ & 3) == 0) block_ = philox(seed_, 0x4241u, uint32_t(q_ >> 2), uint32_t(q_ >> 34));
    const uint32_t word = block_.v[q_ & 3];
    ++q_;
    return uint32_t((uint64_t(word) * bound) >> 32);
  }

 private:
  uint64_t seed_;
  uint64_t q_ = 0;
  Philox4x32 block_{};
};

// Barabasi-Albert preferential attachment (as networkx.barabasi_albert_graph): the star on nodes 0..m
// (0 the centre), then each new node s = m+1, ..., n-1 attaches to m distinct existing nodes drawn with
// probability proportional to their degree (uniform draws from the list holding each node once per unit
// of degree, redrawn on a repeat). Writes the m + m (n - m - 1) undirected edges (a[e], b[e]) in order of
// creation: the star's (0, k), then (s, target) for each new node s.
inline void barabasi_albert(int64_t n, int64_t m, uint64_t seed, int64_t* a, int64_t* b) {
  check(m >= 1 && m < n, "m: expected 1 <= m < n");
  check(n <= (int64_t(1) << 31) - 1, "n: expected at most 2^31 - 1 nodes");
  const int64_t edges = m + m * (n - m - 1);
  check(2 * edges <= (int64_t(1) << 32) - 1, "n, m: too many edges (2 m n must stay below 2^32)");
  std::vector<int64_t> repeated;
  repeated.reserve(size_t(2 * edges));
  std::vector<int64_t> chosen_by(size_t(n), -1);  // the new node that last chose each target
  int64_t e = 0;
  for (int64_t k = 1; k <= m; ++k) {
    a[e] = 0, b[e] = k, ++e;
    repeated.push_back(0);
    repeated.push_back(k);
  }
  PhiloxDraws draws(seed);
  std::vector<int64_t> targets(static_cast<size_t>(m));
  for (int64_t s = m + 1; s < n; ++s) {
    const uint32_t len = uint32_t(repeated.size());
    for (int64_t t = 0; t < m;) {
      const int64_t v = repeated[draws.next(len)];
      if (chosen_by[size_t(v)] == s) continue;
      chosen_by[size_t(v)] = s;
      targets[size_t(t++)] = v;
    }
    for (int64_t t = 0; t < m; ++t) {
      a[e] = s, b[e] = targets[size_t(t)], ++e;
      repeated.push_back(targets[size_t(t)]);
      repeated.push_back(s);
    }
  }
}

}  // namespace ck::graph
