// Entry points of the wire format's index codecs (host only: a CUDA message is packed on the host, see
// python/commkernels/compress/_wire.py). Defined by wire_cpu.cpp in the CPU module only; the bindings
// bind them there and nowhere else.
#pragma once

#include "../common/array.h"

namespace ck::CK_BACKEND {

// Bytes of the delta + varint encoding of `indices` (int32 or int64). Checks that they are strictly
// ascending and lie in [0, size).
int64_t delta_varint_nbytes(const Array& indices, int64_t size);

// payload <- values' bytes, then the indices encoded with `codec` (IndexCodec); payload must have exactly
// that many bytes. Checks the indices as delta_varint_nbytes does.
void encode_sparse(const Array& values, const Array& indices, int64_t size, int codec, const Array& payload);

// The inverse: values (the dtype the header named) and indices (int32) of values.size elements from
// payload. Every length and every decoded index is checked against the payload and `size` before use:
// corrupted input raises ValueError naming what is wrong, and nothing is read or written out of bounds.
void decode_sparse(const Array& payload, int64_t size, int codec, const Array& values, const Array& indices);

}  // namespace ck::CK_BACKEND
