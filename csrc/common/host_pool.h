// A small cache of large host buffers for commkernels' large outputs (CPU torch tensors only: moe's
// permute/combine and their gradients, aggregate's results; _backend.output_buffer).
//
// A freshly mapped buffer pays a page fault per 4 KiB page on its first touch, which on these machines fills
// memory at a few GB/s: for the [rows, h] gradients of a training step that costs more than the kernel that
// writes them. Autograd allocates such an output every step and frees the previous one, so the pages of the
// last freed buffer are kept and handed out again for the next output of the same size (what the CUDA
// caching allocator does on the GPU). Bounded: at most min(RAM / 8, 4 GiB) held while unused, the oldest
// given back to the system first; release() empties it.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

namespace ck::host_pool {

struct Block {
  void* data;
  size_t bytes;
};

struct Pool {
  std::mutex mutex;
  std::vector<Block> unused;  // oldest first
  size_t held = 0;
};

// Never destroyed: a tensor alive at interpreter exit may still give its block back.
inline Pool& pool() {
  static Pool* p = new Pool();
  return *p;
}

constexpr size_t kAlign = 4096;

inline size_t limit() {
  static const size_t bytes = [] {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    const size_t ram = pages > 0 && page > 0 ? size_t(pages) * size_t(page) : 0;
    return std::min<size_t>(ram / 8, size_t(4) << 30);
  }();
  return bytes;
}

// A block of at least `bytes` (rounded up to whole pages): a cached one of that size, else a new one.
inline Block* take(size_t bytes) {
  bytes = std::max(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
  {
    std::lock_guard<std::mutex> lock(pool().mutex);
    auto& unused = pool().unused;
    for (size_t i = unused.size(); i-- > 0;) {  // the most recently freed first: the warmest
      if (unused[i].bytes != bytes) continue;
      Block* b = new Block(unused[i]);
      unused.erase(unused.begin() + std::ptrdiff_t(i));
      pool().held -= bytes;
      return b;
    }
  }
  void* data = std::aligned_alloc(kAlign, bytes);
  if (data == nullptr) throw std::bad_alloc();
  return new Block{data, bytes};
}

// Called when the last tensor using the block dies: keep it for the next output, within the limit.
inline void give_back(Block* b) noexcept {
  std::vector<Block> evicted;
  bool kept = false;
  {
    std::lock_guard<std::mutex> lock(pool().mutex);
    Pool& p = pool();
    if (b->bytes <= limit()) {
      while (p.held + b->bytes > limit() && !p.unused.empty()) {
        evicted.push_back(p.unused.front());
        p.held -= p.unused.front().bytes;
        p.unused.erase(p.unused.begin());
      }
      p.unused.push_back(*b);
      p.held += b->bytes;
      kept = true;
    }
  }
  for (const Block& e : evicted) std::free(e.data);
  if (!kept) std::free(b->data);
  delete b;
}

// Frees every unused block; returns the bytes given back to the system.
inline size_t release() {
  std::vector<Block> unused;
  {
    std::lock_guard<std::mutex> lock(pool().mutex);
    unused.swap(pool().unused);
    pool().held = 0;
  }
  size_t bytes = 0;
  for (const Block& b : unused) bytes += b.bytes, std::free(b.data);
  return bytes;
}

inline size_t held() {
  std::lock_guard<std::mutex> lock(pool().mutex);
  return pool().held;
}

}  // namespace ck::host_pool
