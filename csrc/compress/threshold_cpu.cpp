// Threshold selection on the CPU: a count pass per chunk, an exclusive scan of the counts, then an ordered
// write pass in which each chunk writes its entries at its offset. Deterministic: the output is the same
// ascending list whatever the chunking and thread count.
#include <string>
#include <vector>

#include "../common/parallel.h"
#include "threshold.h"

namespace ck::CK_BACKEND {

void threshold_count(const Array& x, double v, const Array& counts, Stream) {
  with_threshold_args(x, v, counts, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* data = static_cast<const T*>(x.data);
    const key_t<T> min_key = threshold_key<T>(v);
    int64_t* out = static_cast<int64_t*>(counts.data);
    parallel_chunks(x.size, int(counts.size), [&](int c, int64_t begin, int64_t end) {
      int64_t count = 0;
      for (int64_t i = begin; i < end; ++i) count += above_threshold(data[i], min_key);
      out[c] = count;
    });
  });
}

void threshold_write(const Array& x, double v, const Array& counts, const Array& values, const Array& indices,
                     Stream) {
  with_threshold_args(x, v, counts, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* data = static_cast<const T*>(x.data);
    const key_t<T> min_key = threshold_key<T>(v);
    const int64_t* count = static_cast<const int64_t*>(counts.data);
    const int chunks = int(counts.size);
    std::vector<int64_t> offset(size_t(chunks) + 1, 0);
    for (int c = 0; c < chunks; ++c) {
      check(count[c] >= 0, "counts: expected counts from threshold_count");
      offset[size_t(c) + 1] = offset[size_t(c)] + count[c];
    }
    const int64_t total = offset[size_t(chunks)];
    check(values.size == total && indices.size == total,
          "values, indices: expected " + std::to_string(total) + " elements (the sum of counts)");
    T* vals = values.as<T>("values");
    int32_t* idx = indices.as<int32_t>("indices");
    std::vector<char> bad(size_t(chunks), 0);
    parallel_chunks(x.size, chunks, [&](int c, int64_t begin, int64_t end) {
      int64_t o = offset[size_t(c)];
      const int64_t stop = offset[size_t(c) + 1];
      for (int64_t i = begin; i < end; ++i) {
        if (above_threshold(data[i], min_key)) {
          if (o == stop) {  // counts that do not match x: never write past this chunk's share
            bad[size_t(c)] = 1;
            return;
          }
          vals[o] = data[i];
          idx[o++] = int32_t(i);
        }
      }
      bad[size_t(c)] = o != stop;
    });
    for (char b : bad) check(!b, "counts: do not match x and v (expected threshold_count's counts)");
  });
}

}  // namespace ck::CK_BACKEND
