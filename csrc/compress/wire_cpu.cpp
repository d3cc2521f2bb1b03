// The wire format's index codecs on the CPU.
//
// Encoding is parallel over fixed chunks of the indices (delta + varint: a length pass per chunk, an
// exclusive scan of the lengths, then each chunk writes at its offset) or of the bitmap's bytes (each
// chunk binary-searches its first index). Decoding checks every length against the payload before
// reading it; raw and bitmap decode in parallel chunks (count, scan, write); delta + varint decodes
// sequentially, or for large payloads in chunks cut at varint boundaries (decode_delta_parallel).
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "../common/cpu_features.h"
#include "../common/parallel.h"
#include "wire.h"
#include "wire_api.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int64_t kIndexGrain = 1 << 14;

int64_t itemsize(DType t) {
  return dispatch_float(t, "values", [](auto tag) { return int64_t(sizeof(typename decltype(tag)::type)); });
}

IndexCodec codec_of(int codec) {
  check(codec >= 0 && codec <= 2, "index_codec: expected 0 (raw), 1 (delta) or 2 (bitmap), got " +
                                      std::to_string(codec));
  return IndexCodec(codec);
}

// Calls f(const Index*) for int32 or int64 indices.
template <class F>
void with_indices(const Array& indices, F&& f) {
  if (indices.dtype == DType::int32) return f(static_cast<const int32_t*>(indices.data));
  if (indices.dtype == DType::int64) return f(static_cast<const int64_t*>(indices.data));
  throw TypeError(std::string("indices: expected int32 or int64, got ") + dtype_name(indices.dtype));
}

#ifdef CK_AVX512
// The varint bytes of the gaps idx[j] - idx[j-1] for j in [j0, end) (16 or 8 at a time; the rest is left
// to the caller: returns where it stopped), added to `bytes`; `ok` &= every index is above its
// predecessor and below size.
CK_AVX512 inline int64_t varint_bytes_x16(__m512i gap) {
  return 16 + __builtin_popcount(_mm512_cmpge_epu32_mask(gap, _mm512_set1_epi32(1 << 7))) +
         __builtin_popcount(_mm512_cmpge_epu32_mask(gap, _mm512_set1_epi32(1 << 14))) +
         __builtin_popcount(_mm512_cmpge_epu32_mask(gap, _mm512_set1_epi32(1 << 21))) +
         __builtin_popcount(_mm512_cmpge_epu32_mask(gap, _mm512_set1_epi32(1 << 28)));
}

CK_AVX512 int64_t delta_lengths_avx512(const int32_t* idx, int64_t j, int64_t end, int64_t size, int64_t& bytes,
                                       bool& ok) {
  // i < size for every int32 i once size > 2^31 - 1
  const __m512i limit = _mm512_set1_epi32(int32_t(std::min<int64_t>(size, int64_t(INT32_MAX))));
  const bool any_below = size > int64_t(INT32_MAX);
  __mmask16 good = 0xffff;
  for (; j + 16 <= end; j += 16) {
    const __m512i cur = _mm512_loadu_si512(idx + j), prev = _mm512_loadu_si512(idx + j - 1);
    good &= _mm512_cmpgt_epi32_mask(cur, prev);
    if (!any_below) good &= _mm512_cmplt_epi32_mask(cur, limit);
    bytes += varint_bytes_x16(_mm512_sub_epi32(cur, prev));  // the gap's low 32 bits (exact when good)
  }
  ok &= good == 0xffff;
  return j;
}

CK_AVX512 int64_t delta_lengths_avx512(const int64_t* idx, int64_t j, int64_t end, int64_t size, int64_t& bytes,
                                       bool& ok) {
  const __m512i limit = _mm512_set1_epi64(size);
  __mmask8 good = 0xff;
  for (; j + 8 <= end; j += 8) {
    const __m512i cur = _mm512_loadu_si512(idx + j), prev = _mm512_loadu_si512(idx + j - 1);
    good &= _mm512_cmpgt_epi64_mask(cur, prev) & _mm512_cmplt_epi64_mask(cur, limit);
    const __m256i gap = _mm512_cvtepi64_epi32(_mm512_sub_epi64(cur, prev));  // low 32 bits, as the scalar code
    bytes += 8 + __builtin_popcount(_mm256_cmpge_epu32_mask(gap, _mm256_set1_epi32(1 << 7))) +
             __builtin_popcount(_mm256_cmpge_epu32_mask(gap, _mm256_set1_epi32(1 << 14))) +
             __builtin_popcount(_mm256_cmpge_epu32_mask(gap, _mm256_set1_epi32(1 << 21))) +
             __builtin_popcount(_mm256_cmpge_epu32_mask(gap, _mm256_set1_epi32(1 << 28)));
  }
  ok &= good == 0xff;
  return j;
}

// LEB128 of v written as one 8-byte store (BMI2 pdep spreads the 7-bit groups, the continuation bits are
// set on all but the last byte): the caller guarantees 8 writable bytes at out. Returns the length.
CK_AVX512 inline int write_varint_bmi2(uint32_t v, uint8_t* out) {
  const int len = varint_length(v);
  const uint64_t more = 0x0000008080808080ull & ((uint64_t(1) << (8 * (len - 1))) - 1);
  const uint64_t word = _pdep_u64(v, 0x0000007f7f7f7f7full) | more;
  std::memcpy(out, &word, 8);
  return len;
}

// The chunk [begin, end) of the delta encoding, writing from p up to stop (the chunk's end): 8-byte
// stores while they stay inside the chunk, the byte-wise writer for the last few.
template <class Index>
CK_AVX512 void encode_delta_chunk_bmi2(const Index* idx, int64_t begin, int64_t end, uint8_t* p, uint8_t* stop) {
  int64_t prev = begin == 0 ? 0 : int64_t(idx[begin - 1]);
  for (int64_t j = begin; j < end; ++j) {
    const uint32_t gap = uint32_t(int64_t(idx[j]) - prev);
    p += stop - p >= 8 ? write_varint_bmi2(gap, p) : write_varint(gap, p);
    prev = int64_t(idx[j]);
  }
}
#endif

// Per chunk of the indices: the varint bytes of its gaps (the first index as is), and whether every
// index is in [0, size) and above its predecessor. Chunks depend only on k.
template <class Index>
std::vector<int64_t> delta_lengths(const Index* idx, int64_t k, int64_t size) {
  const int chunks = int(std::max<int64_t>(1, std::min<int64_t>(1024, k / kIndexGrain)));
  std::vector<int64_t> length(size_t(chunks) + 1, 0);
  std::vector<char> bad(size_t(chunks), 0);
  parallel_chunks(k, chunks, [&](int c, int64_t begin, int64_t end) {
    if (begin == end) return;
    // The first index of the whole list is sent as is (a gap from 0); it must only be >= 0.
    const int64_t first = int64_t(idx[begin]);
    const int64_t before = begin == 0 ? 0 : int64_t(idx[begin - 1]);
    bool ok = (begin == 0 ? first >= 0 : first > before) && first < size;
    int64_t bytes = varint_length(uint32_t(first - before));
    int64_t j = begin + 1;
#ifdef CK_AVX512
    if (has_avx512()) j = delta_lengths_avx512(idx, j, end, size, bytes, ok);
#endif
    for (; j < end; ++j) {  // branch-free
      const int64_t i = int64_t(idx[j]), gap = i - int64_t(idx[j - 1]);
      ok &= (gap > 0) & (i < size);
      bytes += varint_length(uint32_t(gap));
    }
    length[size_t(c) + 1] = bytes;
    bad[size_t(c)] = !ok;
  });
  for (int c = 0; c < chunks; ++c)
    check(!bad[size_t(c)], "msg.indices: expected strictly ascending indices in [0, " + std::to_string(size) + ")");
  for (int c = 0; c < chunks; ++c) length[size_t(c) + 1] += length[size_t(c)];
  return length;  // exclusive offsets; the last entry is the total
}

void copy_bytes(const uint8_t* src, int64_t n, uint8_t* dst) {
  parallel_for(n, int64_t(1) << 20, [&](int64_t begin, int64_t end) { std::memcpy(dst + begin, src + begin, size_t(end - begin)); });
}

template <class Index>
void encode_raw(const Index* idx, int64_t k, uint8_t* out) {
  parallel_for(k, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const uint32_t v = uint32_t(idx[j]);
      std::memcpy(out + 4 * j, &v, 4);  // little-endian host
    }
  });
}

template <class Index>
void encode_delta(const Index* idx, int64_t k, const std::vector<int64_t>& offset, uint8_t* out) {
  const int chunks = int(offset.size()) - 1;
  parallel_chunks(k, chunks, [&](int c, int64_t begin, int64_t end) {
    uint8_t* p = out + offset[size_t(c)];
#ifdef CK_AVX512
    if (has_avx512()) return encode_delta_chunk_bmi2(idx, begin, end, p, out + offset[size_t(c) + 1]);
#endif
    int64_t prev = begin == 0 ? 0 : int64_t(idx[begin - 1]);
    for (int64_t j = begin; j < end; ++j) {
      p += write_varint(uint32_t(int64_t(idx[j]) - prev), p);
      prev = int64_t(idx[j]);
    }
  });
}

// Bit i of the bitmap is bit (i % 8) of byte i / 8. Each chunk of bytes finds its first index by binary search.
template <class Index>
void encode_bitmap(const Index* idx, int64_t k, int64_t size, uint8_t* out) {
  const int64_t nbytes = bitmap_nbytes(size);
  if (nbytes == 0) return;  // out may be null then: no memset on it
  const int chunks = int(std::max<int64_t>(1, std::min<int64_t>(1024, nbytes / (1 << 16))));
  parallel_chunks(nbytes, chunks, [&](int, int64_t begin, int64_t end) {
    std::memset(out + begin, 0, size_t(end - begin));
    const int64_t last = end * 8;
    int64_t j = std::lower_bound(idx, idx + k, Index(std::min<int64_t>(begin * 8, size))) - idx;
    for (; j < k && int64_t(idx[j]) < last; ++j) {
      const int64_t i = int64_t(idx[j]);
      out[i >> 3] |= uint8_t(1u << (i & 7));
    }
  });
}

void decode_raw(const uint8_t* in, int64_t k, int64_t size, int32_t* out) {
  const int chunks = int(std::max<int64_t>(1, std::min<int64_t>(1024, k / kIndexGrain)));
  std::vector<char> bad(size_t(chunks), 0);
  parallel_chunks(k, chunks, [&](int c, int64_t begin, int64_t end) {
    bool ok = true;
    int64_t prev = -1;
    if (begin > 0) {
      uint32_t v;
      std::memcpy(&v, in + 4 * (begin - 1), 4);
      prev = v;
    }
    for (int64_t j = begin; j < end; ++j) {
      uint32_t v;
      std::memcpy(&v, in + 4 * j, 4);
      ok &= (int64_t(v) > prev) & (int64_t(v) < size);
      out[j] = int32_t(v);
      prev = v;
    }
    bad[size_t(c)] = !ok;
  });
  for (char b : bad) check(!b, "buf: corrupted raw indices (expected strictly ascending indices in [0, size))");
}

void decode_delta(const uint8_t* in, int64_t nbytes, int64_t k, int64_t size, int32_t* out) {
  const uint8_t* p = in;
  const uint8_t* const end = in + nbytes;
  int64_t prev = -1;
  for (int64_t j = 0; j < k; ++j) {
    uint32_t gap;
    const int n = read_varint(p, end, &gap);
    // (the messages are built only on failure: this loop is hot)
    if (n == 0)
      throw ValueError("buf: corrupted delta indices (a varint runs past the index payload, overflows 32 bits "
                       "or is not in shortest form) at index " + std::to_string(j));
    p += n;
    const int64_t i = j == 0 ? int64_t(gap) : prev + int64_t(gap);
    if (j > 0 && gap == 0) throw ValueError("buf: corrupted delta indices (a zero gap) at index " + std::to_string(j));
    if (i >= size)
      throw ValueError("buf: corrupted delta indices (index " + std::to_string(i) + " >= size " + std::to_string(size) + ")");
    out[j] = int32_t(i);
    prev = i;
  }
  check(p == end, "buf: corrupted delta indices (" + std::to_string(end - p) + " bytes left over after " +
                      std::to_string(k) + " indices)");
}

// Delta + varint decode in parallel for large payloads. A varint ends at a byte whose high bit is clear, so
// cutting the payload just after such bytes cuts it where the sequential parse would: each chunk starts
// at the first varint that begins at or after its nominal start. Pass 1 counts each chunk's varints and
// sums its gaps (checking every varint); then every count, offset and index bound is known and checked,
// and pass 2 parses again, writing the prefix sums (the indices) at the chunk's offset.
void decode_delta_parallel(const uint8_t* in, int64_t nbytes, int64_t k, int64_t size, int32_t* out) {
  const int chunks = int(std::min<int64_t>(1024, nbytes / (1 << 16)));
  std::vector<int64_t> start(size_t(chunks) + 1, nbytes);
  for (int c = 0; c < chunks; ++c) {
    int64_t p = nbytes / chunks * c + std::min<int64_t>(c, nbytes % chunks);
    const int64_t limit = std::min<int64_t>(nbytes, p + kMaxVarintBytes);
    while (p > 0 && p < limit && (in[p - 1] & 0x80u)) ++p;
    if (p > 0 && p < nbytes && (in[p - 1] & 0x80u))
      throw ValueError("buf: corrupted delta indices (a varint longer than 5 bytes)");
    start[size_t(c)] = p;
  }
  std::vector<int64_t> count(size_t(chunks) + 1, 0), base(size_t(chunks) + 1, 0);
  std::vector<char> bad(size_t(chunks), 0);
  parallel_chunks(chunks, chunks, [&](int c, int64_t, int64_t) {
    const uint8_t* p = in + start[size_t(c)];
    const uint8_t* const end = in + start[size_t(c) + 1];
    int64_t n = 0;
    uint64_t sum = 0;
    bool ok = true;
    while (p < end) {
      uint32_t gap;
      const int len = read_varint(p, end, &gap);
      if (len == 0 || (gap == 0 && (c > 0 || n > 0))) {
        ok = false;
        break;
      }
      p += len;
      sum += gap;
      ++n;
    }
    count[size_t(c) + 1] = n;
    base[size_t(c) + 1] = int64_t(sum);
    bad[size_t(c)] = !ok;
  });
  for (char b : bad)
    check(!b, "buf: corrupted delta indices (a varint runs past the index payload, overflows 32 bits or is not "
              "in shortest form, or a zero gap)");
  for (int c = 0; c < chunks; ++c) {
    count[size_t(c) + 1] += count[size_t(c)];
    base[size_t(c) + 1] += base[size_t(c)];
  }
  check(count[size_t(chunks)] == k, "buf: corrupted delta indices (" + std::to_string(count[size_t(chunks)]) +
                                        " varints, the header says " + std::to_string(k) + " indices)");
  check(k == 0 || base[size_t(chunks)] < size, "buf: corrupted delta indices (the last index " +
                                                   std::to_string(base[size_t(chunks)]) + " >= size " +
                                                   std::to_string(size) + ")");
  parallel_chunks(chunks, chunks, [&](int c, int64_t, int64_t) {
    const uint8_t* p = in + start[size_t(c)];
    const uint8_t* const end = in + start[size_t(c) + 1];
    int32_t* o = out + count[size_t(c)];
    int32_t* const stop = out + count[size_t(c) + 1];
    int64_t index = base[size_t(c)];
    while (p < end && o < stop) {  // the same parse as pass 1, which checked it
      uint32_t gap = 0;
      p += read_varint(p, end, &gap);
      index += gap;
      *o++ = int32_t(index);
    }
  });
}

uint64_t load_word(const uint8_t* p, int64_t available) {
  uint64_t w = 0;
  std::memcpy(&w, p, size_t(std::min<int64_t>(8, available)));
  return w;
}

void decode_bitmap(const uint8_t* in, int64_t k, int64_t size, int32_t* out) {
  const int64_t nbytes = bitmap_nbytes(size);
  if (size % 8)
    check((in[nbytes - 1] >> (size % 8)) == 0, "buf: corrupted bitmap (bits set past size " + std::to_string(size) + ")");
  const int64_t words = (nbytes + 7) / 8;
  const int chunks = int(std::max<int64_t>(1, std::min<int64_t>(1024, words / (1 << 13))));
  std::vector<int64_t> offset(size_t(chunks) + 1, 0);
  parallel_chunks(words, chunks, [&](int c, int64_t begin, int64_t end) {
    int64_t count = 0;
    for (int64_t w = begin; w < end; ++w) count += __builtin_popcountll(load_word(in + 8 * w, nbytes - 8 * w));
    offset[size_t(c) + 1] = count;
  });
  for (int c = 0; c < chunks; ++c) offset[size_t(c) + 1] += offset[size_t(c)];
  check(offset[size_t(chunks)] == k, "buf: corrupted bitmap (" + std::to_string(offset[size_t(chunks)]) +
                                         " bits set, the header says " + std::to_string(k) + " indices)");
  parallel_chunks(words, chunks, [&](int c, int64_t begin, int64_t end) {
    int32_t* o = out + offset[size_t(c)];
    for (int64_t w = begin; w < end; ++w) {
      uint64_t bits = load_word(in + 8 * w, nbytes - 8 * w);
      while (bits) {
        *o++ = int32_t(64 * w + __builtin_ctzll(bits));
        bits &= bits - 1;
      }
    }
  });
}

}  // namespace

int64_t delta_varint_nbytes(const Array& indices, int64_t size) {
  check(size >= 0, "size: expected >= 0, got " + std::to_string(size));
  int64_t total = 0;
  with_indices(indices, [&](const auto* idx) { total = delta_lengths(idx, indices.size, size).back(); });
  return total;
}

void encode_sparse(const Array& values, const Array& indices, int64_t size, int codec, const Array& payload) {
  check(size >= 0, "size: expected >= 0, got " + std::to_string(size));
  check_size_fits_int32(size, "size");
  const IndexCodec kind = codec_of(codec);
  const int64_t k = indices.size;
  check(values.size == k, "msg: " + std::to_string(values.size) + " values but " + std::to_string(k) + " indices");
  check(k <= size, "msg: " + std::to_string(k) + " indices for size " + std::to_string(size));
  payload.as<uint8_t>("out");
  const int64_t value_bytes = k * itemsize(values.dtype);
  uint8_t* out = static_cast<uint8_t*>(payload.data);
  with_indices(indices, [&](const auto* idx) {
    const std::vector<int64_t> offset = delta_lengths(idx, k, size);  // also checks the indices
    const int64_t index_bytes = kind == IndexCodec::raw ? 4 * k : kind == IndexCodec::delta ? offset.back() : bitmap_nbytes(size);
    check(payload.size == value_bytes + index_bytes,
          "out: expected " + std::to_string(value_bytes + index_bytes) + " bytes, got " + std::to_string(payload.size));
    copy_bytes(static_cast<const uint8_t*>(values.data), value_bytes, out);
    out += value_bytes;
    if (kind == IndexCodec::raw) encode_raw(idx, k, out);
    else if (kind == IndexCodec::delta) encode_delta(idx, k, offset, out);
    else encode_bitmap(idx, k, size, out);
  });
}

void decode_sparse(const Array& payload, int64_t size, int codec, const Array& values, const Array& indices) {
  check(size >= 0, "size: expected >= 0, got " + std::to_string(size));
  check_size_fits_int32(size, "size");
  const IndexCodec kind = codec_of(codec);
  const int64_t k = indices.size;
  check(values.size == k, "values: expected " + std::to_string(k) + " elements like indices");
  check(k <= size, "buf: corrupted header (count " + std::to_string(k) + " > size " + std::to_string(size) + ")");
  const uint8_t* in = payload.as<uint8_t>("buf");
  int32_t* out = indices.as<int32_t>("indices");
  const int64_t value_bytes = k * itemsize(values.dtype);
  check(payload.size >= value_bytes, "buf: truncated (" + std::to_string(payload.size) + " payload bytes, " +
                                         std::to_string(value_bytes) + " needed for the values)");
  const int64_t index_bytes = payload.size - value_bytes;
  const int64_t expected = kind == IndexCodec::raw ? 4 * k : kind == IndexCodec::bitmap ? bitmap_nbytes(size) : -1;
  if (expected >= 0)
    check(index_bytes == expected, "buf: corrupted lengths (" + std::to_string(index_bytes) + " index bytes, " +
                                       std::to_string(expected) + " expected)");
  else
    check(index_bytes >= k && index_bytes <= kMaxVarintBytes * k,
          "buf: corrupted lengths (" + std::to_string(index_bytes) + " delta index bytes for " + std::to_string(k) + " indices)");
  if (kind == IndexCodec::raw) decode_raw(in + value_bytes, k, size, out);
  else if (kind == IndexCodec::delta && index_bytes >= (int64_t(1) << 17) && max_threads() > 1)
    decode_delta_parallel(in + value_bytes, index_bytes, k, size, out);
  else if (kind == IndexCodec::delta) decode_delta(in + value_bytes, index_bytes, k, size, out);
  else decode_bitmap(in + value_bytes, k, size, out);
  copy_bytes(in, value_bytes, static_cast<uint8_t*>(values.data));
}

}  // namespace ck::CK_BACKEND
