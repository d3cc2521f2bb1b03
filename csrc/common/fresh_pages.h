// Large outputs that the caller has just allocated fill at about 4 GB/s on this kind of machine: every
// 4 KiB page faults on its first write. Asking the kernel for transparent huge pages on them (Linux, THP
// in "madvise" or "always" mode) makes that one fault per 2 MiB. The advice changes no data and its
// failure (no THP, a file mapping) changes nothing, so it is only ever an optimisation.
#pragma once

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace ck {

constexpr int64_t kHugePageBytes = int64_t(1) << 21;

// Advises huge pages on the 2 MiB-aligned part of [p, p + bytes) for outputs of 16 MiB or more.
inline void advise_huge_pages(void* p, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p == nullptr || bytes < (int64_t(1) << 24)) return;
  const uintptr_t begin = (uintptr_t(p) + uintptr_t(kHugePageBytes - 1)) & ~uintptr_t(kHugePageBytes - 1);
  const uintptr_t end = (uintptr_t(p) + uintptr_t(bytes)) & ~uintptr_t(kHugePageBytes - 1);
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), size_t(end - begin), MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace ck
