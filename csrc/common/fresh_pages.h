// Large outputs that the caller has just allocated fill at about 4 GB/s on this kind of machine: every
// 4 KiB page faults on its first write. Asking the kernel for transparent huge pages on them (Linux, THP
// in "madvise" or "always" mode) makes that one fault per 2 MiB, and a 100 MB output's median fill time
// ~30% shorter. Opt-in (COMMKERNELS_HUGE_PAGES=1, read at each call), as torch's THP_MEM_ALLOC_ENABLE:
// where THP defrag is "madvise" a huge-page fault may compact memory first, and on a shared machine here
// that made single calls 2-4x slower now and then. The advice changes no data and its failure (no THP, a
// file mapping) changes nothing but the speed.
#pragma once

#include <cstdint>
#include <cstdlib>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace ck {

constexpr int64_t kHugePageBytes = int64_t(1) << 21;

inline bool huge_pages_requested() {
  const char* v = std::getenv("COMMKERNELS_HUGE_PAGES");
  return v != nullptr && v[0] != '\0' && v[0] != '0';
}

// Advises huge pages on the 2 MiB-aligned part of [p, p + bytes), for outputs of 8 MiB or more, when asked.
inline void advise_huge_pages(void* p, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p == nullptr || bytes < 4 * kHugePageBytes || !huge_pages_requested()) return;
  const uintptr_t begin = (uintptr_t(p) + uintptr_t(kHugePageBytes - 1)) & ~uintptr_t(kHugePageBytes - 1);
  const uintptr_t end = (uintptr_t(p) + uintptr_t(bytes)) & ~uintptr_t(kHugePageBytes - 1);
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), size_t(end - begin), MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace ck
