// Huge pages for a freshly allocated, never touched, large output (CPU only).
//
// A fresh buffer's first touch costs a page fault per 4 KiB page; on this kind of machine that fills memory
// at about 4 GB/s, several times slower than the row moves that write it. Marking the buffer's whole 2 MiB
// pages MADV_HUGEPAGE before the first write makes each fault map (and zero) 2 MiB at once. Only for
// buffers the library itself just allocated: a caller's out= buffer is left alone. Linux only; elsewhere,
// or when the kernel refuses (transparent huge pages off), nothing changes but the speed.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace ck {

constexpr size_t kHugePage = size_t(2) << 20;
constexpr size_t kFreshHugeBytes = size_t(8) << 20;  // below this the faults cost little

inline void advise_fresh_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (data == nullptr || bytes < kFreshHugeBytes) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHugePage - 1) & ~uintptr_t(kHugePage - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~uintptr_t(kHugePage - 1);
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // a hint only
#else
  (void)data, (void)bytes;
#endif
}

}  // namespace ck
