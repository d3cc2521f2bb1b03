// Host+device helpers of the wire format (python/commkernels/compress/_wire.py documents the layout):
// LEB128 varints of index gaps and LSB-first bitmaps.
#pragma once

#include "../common/hostdevice.h"

namespace ck {

enum class IndexCodec : int { raw = 0, delta = 1, bitmap = 2 };

constexpr int kMaxVarintBytes = 5;  // a uint32 needs at most 5 groups of 7 bits

// Bytes of the LEB128 encoding of v.
CK_HD int varint_length(uint32_t v) {
  return 1 + int(v >= (1u << 7)) + int(v >= (1u << 14)) + int(v >= (1u << 21)) + int(v >= (1u << 28));
}

// Writes the LEB128 encoding of v (7 bits per byte, least significant group first, high bit = more).
CK_HD int write_varint(uint32_t v, uint8_t* out) {
  int n = 0;
  while (v >= 0x80u) {
    out[n++] = uint8_t(v | 0x80u);
    v >>= 7;
  }
  out[n++] = uint8_t(v);
  return n;
}

// Reads one varint from [p, end): returns the bytes read, or 0 for a varint that runs past `end`, is
// longer than 5 bytes, overflows 32 bits or is not in its shortest form (a final byte of 0 after others).
CK_HD int read_varint(const uint8_t* p, const uint8_t* end, uint32_t* value) {
  uint32_t v = 0;
  for (int n = 0; n < kMaxVarintBytes; ++n) {
    if (p + n >= end) return 0;
    const uint32_t byte = p[n];
    if (n == kMaxVarintBytes - 1 && byte > 0x0fu) return 0;  // bits past 32
    v |= (byte & 0x7fu) << (7 * n);
    if (!(byte & 0x80u)) {
      if (n > 0 && byte == 0) return 0;  // not the shortest encoding
      *value = v;
      return n + 1;
    }
  }
  return 0;
}

CK_HD int64_t bitmap_nbytes(int64_t size) { return (size + 7) / 8; }

}  // namespace ck
