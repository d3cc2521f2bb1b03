#include "../common/parallel.h"
#include "api.h"

namespace ck::CK_BACKEND {

void stream_triad(const Array& a, const Array& b, const Array& c, float scalar, Stream) {
  check(a.size == b.size && a.size == c.size, "stream_triad: a, b and c need the same size");
  float* out = a.as<float>("a");
  const float* x = b.as<float>("b");
  const float* y = c.as<float>("c");
  // One contiguous chunk per thread, as STREAM's static schedule does.
  parallel_chunks(a.size, chunk_count(a.size), [&](int, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = x[i] + scalar * y[i];
  });
}

}  // namespace ck::CK_BACKEND
