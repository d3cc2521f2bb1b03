// The memory-bandwidth probe that `python -m commkernels bench` runs in the same process as the kernels.
#pragma once

#include "../common/array.h"
#include "../common/stream.h"

namespace ck::CK_BACKEND {

// STREAM triad, a = b + scalar * c on float32 arrays: 12 bytes moved per element.
void stream_triad(const Array& a, const Array& b, const Array& c, float scalar, Stream stream);

}  // namespace ck::CK_BACKEND
