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
#include <type_traits>
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

// AVX-512 VBMI2 (byte compress) on top of CK_AVX512's set, checked at run time apart.
#define CK_AVX512_VBMI2 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx512vbmi2,bmi2")))

inline bool has_avx512_vbmi2() {
  static const bool supported = has_avx512() && __builtin_cpu_supports("avx512vbmi2");
  return supported;
}

// The varints of the gaps idx[j] - idx[j-1] for j in [j0, end) (j0 >= 1), 16 at a time: each gap's four
// 7-bit groups spread into the four bytes of its lane with the continuation bits, the bytes past its
// length dropped by a byte compress, one masked store. Gaps of 2^28 or more (5 bytes) go through the
// scalar writer. Returns the end of what it wrote; stops before the last incomplete 16.
CK_AVX512_VBMI2 uint8_t* encode_delta_vbmi2(const int32_t* idx, int64_t& j, int64_t end, uint8_t* p) {
  const __m512i bytepos = _mm512_set1_epi32(0x03020100);
  const __m512i first_byte = _mm512_set4_epi32(0x0C0C0C0C, 0x08080808, 0x04040404, 0x00000000);
  const __m512i group = _mm512_set1_epi32(0x7f), one = _mm512_set1_epi32(1);
  for (; j + 16 <= end; j += 16) {
    const __m512i gap = _mm512_sub_epi32(_mm512_loadu_si512(idx + j), _mm512_loadu_si512(idx + j - 1));
    if (_mm512_cmpge_epu32_mask(gap, _mm512_set1_epi32(1 << 28))) {
      for (int l = 0; l < 16; ++l) p += write_varint(uint32_t(idx[j + l] - idx[j + l - 1]), p);
      continue;
    }
    const __m512i spread = _mm512_ternarylogic_epi32(
        _mm512_and_si512(gap, group), _mm512_and_si512(_mm512_slli_epi32(gap, 1), _mm512_set1_epi32(0x7f00)),
        _mm512_or_si512(_mm512_and_si512(_mm512_slli_epi32(gap, 2), _mm512_set1_epi32(0x7f0000)),
                        _mm512_and_si512(_mm512_slli_epi32(gap, 3), _mm512_set1_epi32(0x7f000000))),
        0xFE);  // a | b | c
    const __m512i more = _mm512_add_epi32(
        _mm512_add_epi32(_mm512_maskz_mov_epi32(_mm512_cmpge_epu32_mask(gap, _mm512_set1_epi32(1 << 7)), one),
                         _mm512_maskz_mov_epi32(_mm512_cmpge_epu32_mask(gap, _mm512_set1_epi32(1 << 14)), one)),
        _mm512_maskz_mov_epi32(_mm512_cmpge_epu32_mask(gap, _mm512_set1_epi32(1 << 21)), one));  // length - 1
    const __m512i cont = _mm512_and_si512(_mm512_set1_epi32(int(0x80808080u)),
                                          _mm512_sub_epi32(_mm512_sllv_epi32(one, _mm512_slli_epi32(more, 3)), one));
    const __m512i word = _mm512_or_si512(spread, cont);
    const __mmask64 keep = _mm512_cmple_epu8_mask(bytepos, _mm512_shuffle_epi8(more, first_byte));
    const int n = __builtin_popcountll(keep);
    _mm512_mask_storeu_epi8(p, _bzhi_u64(~uint64_t(0), unsigned(n)), _mm512_maskz_compress_epi8(keep, word));
    p += n;
  }
  return p;
}

// Sequential delta decoding, 16 varints at a time while 64 payload bytes can be loaded: the varints'
// last bytes (high bit clear) give their end positions (a byte compress of the positions), hence their
// lengths; a byte expand puts each varint's bytes in its own 32-bit lane; the 7-bit groups are joined,
// the gaps summed by an in-register scan. Any block with a varint of 5 bytes or more, one not in shortest
// form, a zero gap, an index >= size, or fewer than 16 varints in 64 bytes stops it there: the checked
// byte-wise loop takes over (and raises the error where there is one).
CK_AVX512_VBMI2 void decode_delta_vbmi2(const uint8_t*& p_ref, const uint8_t* end, int64_t k, int64_t size,
                                        int32_t* __restrict out, int64_t& j_ref, int64_t& prev_ref) {
  const uint8_t* p = p_ref;
  int64_t j = j_ref, prev = prev_ref;
  const __m512i iota = _mm512_set_epi8(63, 62, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44,
                                       43, 42, 41, 40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24,
                                       23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512i bytepos = _mm512_set1_epi32(0x03020100);
  const __m512i first_byte = _mm512_set4_epi32(0x0C0C0C0C, 0x08080808, 0x04040404, 0x00000000);
  const __m512i minus_one = _mm512_set1_epi32(-1), group = _mm512_set1_epi32(0x7f);
  while (j + 16 <= k && end - p >= 64) {
    const __m512i v = _mm512_loadu_si512(p);
    const __mmask64 last = ~_mm512_movepi8_mask(v);
    if (__builtin_popcountll(last) < 16) break;
    const __m512i t = _mm512_cvtepu8_epi32(_mm512_castsi512_si128(_mm512_maskz_compress_epi8(last, iota)));
    const __m512i before = _mm512_alignr_epi32(t, minus_one, 15);  // the previous varint's end (-1 first)
    const __m512i len = _mm512_sub_epi32(t, before);                // 1 ..
    if (_mm512_cmpgt_epi32_mask(len, _mm512_set1_epi32(4))) break;
    const __m512i more = _mm512_sub_epi32(len, _mm512_set1_epi32(1));
    const __mmask64 place = _mm512_cmple_epu8_mask(bytepos, _mm512_shuffle_epi8(more, first_byte));
    const __m512i w = _mm512_maskz_expand_epi8(place, v);  // lane i: varint i's bytes, zero-extended
    // shortest form: a varint of two or more bytes does not end in a zero byte
    const __m512i top = _mm512_srlv_epi32(w, _mm512_slli_epi32(more, 3));
    if (_mm512_mask_cmpeq_epi32_mask(_mm512_cmpgt_epi32_mask(more, _mm512_setzero_si512()), top, _mm512_setzero_si512())) break;
    const __m512i gap = _mm512_ternarylogic_epi32(
        _mm512_and_si512(w, group), _mm512_and_si512(_mm512_srli_epi32(w, 1), _mm512_set1_epi32(0x7f << 7)),
        _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(w, 2), _mm512_set1_epi32(0x7f << 14)),
                        _mm512_and_si512(_mm512_srli_epi32(w, 3), _mm512_set1_epi32(0x7f << 21))),
        0xFE);
    __mmask16 zero = _mm512_cmpeq_epi32_mask(gap, _mm512_setzero_si512());
    if (j == 0) zero &= 0xfffe;  // the first index is sent as is: it may be 0
    if (zero) break;
    __m512i sum = gap;  // inclusive scan of 16 gaps (each < 2^28: the sums fit 32 bits)
    sum = _mm512_add_epi32(sum, _mm512_alignr_epi32(sum, _mm512_setzero_si512(), 15));
    sum = _mm512_add_epi32(sum, _mm512_alignr_epi32(sum, _mm512_setzero_si512(), 14));
    sum = _mm512_add_epi32(sum, _mm512_alignr_epi32(sum, _mm512_setzero_si512(), 12));
    sum = _mm512_add_epi32(sum, _mm512_alignr_epi32(sum, _mm512_setzero_si512(), 8));
    alignas(64) uint32_t lanes[16];
    _mm512_store_si512(lanes, sum);
    const int64_t base = j == 0 ? 0 : prev;
    const int64_t highest = base + int64_t(lanes[15]);  // the gaps are positive: the last index is the largest
    if (highest >= size) break;
    _mm512_storeu_si512(out + j, _mm512_add_epi32(sum, _mm512_set1_epi32(int32_t(base))));
    prev = highest;
    j += 16;
    alignas(64) uint32_t ends[16];
    _mm512_store_si512(ends, t);
    p += ends[15] + 1;
  }
  p_ref = p;
  j_ref = j;
  prev_ref = prev;
}

// The chunk [begin, end) of the delta encoding, writing from p up to stop (the chunk's end): 8-byte
// stores while they stay inside the chunk, the byte-wise writer for the last few.
template <class Index>
CK_AVX512 void encode_delta_chunk_bmi2(const Index* idx, int64_t begin, int64_t end, uint8_t* p, uint8_t* stop) {
  int64_t prev = begin == 0 ? 0 : int64_t(idx[begin - 1]);
  int64_t j = begin;
  if constexpr (std::is_same_v<Index, int32_t>) {
    if (has_avx512_vbmi2() && end - begin > 16) {
      p += write_varint(uint32_t(int64_t(idx[j]) - prev), p);  // the chunk's first gap (from idx[-1] or 0)
      ++j;
      p = encode_delta_vbmi2(idx, j, end, p);
      prev = int64_t(idx[j - 1]);
    }
  }
  for (; j < end; ++j) {
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
  int64_t prev = -1, j = 0;
#ifdef CK_AVX512
  if (has_avx512_vbmi2()) decode_delta_vbmi2(p, end, k, size, out, j, prev);
#endif
  for (; j < k; ++j) {
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
