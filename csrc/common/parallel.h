// Host-side parallel loops over OpenMP (serial when the build has no OpenMP).
#pragma once

#include <algorithm>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ck {

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline void set_num_threads(int n) {
#ifdef _OPENMP
  omp_set_num_threads(std::max(1, n));
#else
  (void)n;
#endif
}

// Splits [0, n) into `chunks` contiguous ranges and calls f(chunk, begin, end) for each, in parallel.
// Chunk boundaries depend only on (n, chunks), so a kernel that reduces per chunk in a fixed order is
// deterministic whatever the thread count.
template <class F>
void parallel_chunks(int64_t n, int chunks, F&& f) {
  auto range = [n, chunks](int c) { return n / chunks * c + std::min<int64_t>(c, n % chunks); };
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (chunks > 1)
#endif
  for (int c = 0; c < chunks; ++c) f(c, range(c), range(c + 1));
}

// Calls f(begin, end) on contiguous grains of [0, n) in parallel; for loops whose iterations are independent.
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
  const int64_t grains = (n + grain - 1) / grain;
  if (grains <= 1) {
    if (n > 0) f(int64_t(0), n);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
  for (int64_t g = 0; g < grains; ++g) f(g * grain, std::min(n, (g + 1) * grain));
}

// The number of chunks a pass over n elements is split into: one per thread, none smaller than min_chunk.
inline int chunk_count(int64_t n, int64_t min_chunk = 1 << 15) {
  return int(std::max<int64_t>(1, std::min<int64_t>(max_threads(), n / min_chunk)));
}

}  // namespace ck
