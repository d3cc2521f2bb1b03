// CPU loops that skip the OpenMP region when the whole pass is small (CPU files only).
//
// Waking the second thread costs microseconds on a quiet machine and milliseconds on a busy one (a region
// waits for a descheduled sibling), more than a pass over a few tens of thousands of elements. Up to
// kParallelWork elements of work these run the same chunks or grains on the calling thread, in order: the
// same arithmetic, hence the same bits, as the parallel loops they replace.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../common/parallel.h"

namespace ck::moe {

constexpr int64_t kParallelWork = int64_t(1) << 16;

// parallel_chunks(n, chunks, f), serial when work <= kParallelWork (the same chunk boundaries).
template <class F>
void chunks_by_work(int64_t n, int chunks, int64_t work, F&& f) {
  if (work > kParallelWork) return parallel_chunks(n, chunks, f);
  for (int c = 0; c < chunks; ++c)
    f(c, n / chunks * c + std::min<int64_t>(c, n % chunks), n / chunks * (c + 1) + std::min<int64_t>(c + 1, n % chunks));
}

// parallel_for(n, grain, f) for independent iterations; one call f(0, n) when work <= kParallelWork.
template <class F>
void for_by_work(int64_t n, int64_t grain, int64_t work, F&& f) {
  if (work > kParallelWork) return parallel_for(n, grain, f);
  if (n > 0) f(int64_t(0), n);
}

}  // namespace ck::moe
