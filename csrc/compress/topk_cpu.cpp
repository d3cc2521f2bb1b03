// Magnitude top-k on the CPU: sample, one filtering pass, then an exact select among the few survivors.
//
// 1. A strided sample of the keys gives a threshold t that, with high probability, at least k keys reach
//    and not many more (the 4-sigma binomial bound below).
// 2. One pass (fused with the error-feedback add in ef_topk) keeps, per thread and in index order, every
//    element whose key is >= t: the candidates, with their keys.
// 3. If fewer than k keys reach t (an unlucky sample, or heavy ties), an exact histogram of the top key
//    bits gives a threshold that at least k keys reach, and step 2 runs again over the data.
// 4. Radix select over the candidates' keys finds the k-th element (T, I) in the order "larger key first,
//    then lower index"; the top-k is exactly { i : key_i > T or (key_i == T and i <= I) }, compacted from
//    the candidates in index order.
// The result never depends on the sample or on the thread count: only the amount of work does. Reads
// the input once (twice after a fallback); extra memory is the candidate lists, 8 bytes per candidate:
// about 1.2 k for continuous data, up to n when most keys tie at the threshold (e.g. mostly zeros).
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "../common/cpu_features.h"
#include "../common/parallel.h"
#include "api.h"
#include "args.h"
#include "topk.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int kRadixBits = 11;
constexpr int kRadixBins = 1 << kRadixBits;
constexpr int64_t kSampleSize = 1 << 15;

// One thread's candidates: indices ascending, with their keys.
template <class K>
struct Candidates {
  std::vector<int32_t> index;
  std::vector<K> key;
};

// Threshold from a strided sample of m keys: the r-th largest sample key, r = q m + 4 sqrt(q m) + 1 with
// q = k/n, so that fewer than k of the n keys reach it only with probability ~3e-5. Also returns r/m,
// the fraction of all keys expected to reach it.
template <class K, class SampleKey>
std::pair<K, double> sample_threshold(int64_t n, int64_t k, SampleKey sample_key) {
  const int64_t m = std::min(n, kSampleSize);
  const double expected = double(k) / double(n) * double(m);
  const int64_t rank = int64_t(std::ceil(expected + 4.0 * std::sqrt(expected) + 1.0));
  if (rank >= m) return {K(0), 1.0};
  std::vector<K> keys(static_cast<size_t>(m));
  for (int64_t j = 0; j < m; ++j) keys[size_t(j)] = sample_key(int64_t(double(j) * double(n) / double(m)));
  std::nth_element(keys.begin(), keys.begin() + (rank - 1), keys.end(), std::greater<K>());
  return {keys[size_t(rank - 1)], double(rank) / double(m)};
}

// The largest threshold (a multiple of 2^shift) that at least k keys reach, from an exact histogram of
// the top kRadixBits key bits: one read-only pass.
template <class K, class KeyAt>
K histogram_threshold(int64_t n, int64_t k, int key_bits_, KeyAt key_at, int chunks) {
  const int shift = key_bits_ - kRadixBits;
  std::vector<int64_t> hist(size_t(chunks) * kRadixBins, 0);
  parallel_chunks(n, chunks, [&](int c, int64_t begin, int64_t end) {
    int64_t* h = hist.data() + size_t(c) * kRadixBins;
    for (int64_t i = begin; i < end; ++i) ++h[key_at(i) >> shift];
  });
  int64_t seen = 0;
  int bin = kRadixBins - 1;
  for (;; --bin) {
    for (int c = 0; c < chunks; ++c) seen += hist[size_t(c) * kRadixBins + bin];
    if (seen >= k || bin == 0) break;
  }
  return K(bin) << shift;
}

// Positions j < len with keys[j] >= threshold, written to sel; returns how many. Branch-free, because
// whether a key passes is unpredictable.
template <class K>
int select_positions(const K* keys, int len, K threshold, int32_t* sel) {
  int count = 0;
  for (int j = 0; j < len; ++j) {
    sel[count] = j;
    count += keys[j] >= threshold;
  }
  return count;
}

#ifdef CK_AVX512
// The same with AVX-512 compress-stores: 16 keys per step.
CK_AVX512 int select_positions_avx512(const uint32_t* keys, int len, uint32_t threshold, int32_t* sel) {
  const __m512i t = _mm512_set1_epi32(int(threshold));
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int count = 0, j = 0;
  for (; j + 16 <= len; j += 16) {
    const __mmask16 pass = _mm512_cmpge_epu32_mask(_mm512_loadu_si512(keys + j), t);
    _mm512_mask_compressstoreu_epi32(sel + count, pass, _mm512_add_epi32(lane, _mm512_set1_epi32(j)));
    count += __builtin_popcount(pass);
  }
  for (; j < len; ++j) {
    sel[count] = j;
    count += keys[j] >= threshold;
  }
  return count;
}
#endif

// Appends every i in [begin, end) with key_of(i) >= threshold to `out`, in order. key_of is called
// exactly once per element, in order (ef_topk's key_of also stores p). Works in tiles that stay in L1:
// a vectorisable loop computes the keys, then the passing positions are compacted. Always inlined, so
// that collect_avx512 compiles this body (and key_of) for AVX-512.
template <class K, class KeyOf>
[[gnu::always_inline]] inline void collect_tiles(int64_t begin, int64_t end, K threshold, KeyOf key_of, Candidates<K>& out, bool avx512) {
  constexpr int kTile = 1024;
  K keys[kTile];
  int32_t sel[kTile];
  for (int64_t tile = begin; tile < end; tile += kTile) {
    const int len = int(std::min<int64_t>(kTile, end - tile));
    for (int j = 0; j < len; ++j) keys[j] = key_of(tile + j);
    int count;
#ifdef CK_AVX512
    if constexpr (sizeof(K) == 4) {
      count = avx512 ? select_positions_avx512(keys, len, threshold, sel) : select_positions(keys, len, threshold, sel);
    } else
#endif
      count = select_positions(keys, len, threshold, sel);
    const size_t old = out.index.size();
    out.index.resize(old + size_t(count));
    out.key.resize(old + size_t(count));
    for (int q = 0; q < count; ++q) {
      out.index[old + size_t(q)] = int32_t(tile + sel[q]);
      out.key[old + size_t(q)] = keys[sel[q]];
    }
  }
}

#ifdef CK_AVX512
// The tile loop compiled for AVX-512 as well, so that the key computation vectorises 16 wide.
template <class K, class KeyOf>
CK_AVX512 void collect_avx512(int64_t begin, int64_t end, K threshold, KeyOf key_of, Candidates<K>& out) {
  collect_tiles(begin, end, threshold, key_of, out, true);
}
#endif

template <class K, class KeyOf>
void collect(int64_t begin, int64_t end, K threshold, KeyOf key_of, Candidates<K>& out) {
#ifdef CK_AVX512
  if (has_avx512()) return collect_avx512(begin, end, threshold, key_of, out);
#endif
  collect_tiles(begin, end, threshold, key_of, out, false);
}

template <class K>
int64_t total_size(const std::vector<Candidates<K>>& lists) {
  int64_t total = 0;
  for (const auto& c : lists) total += int64_t(c.index.size());
  return total;
}

// Radix select over (key, index) pairs listed in index order: returns the rank-th element (1-based) in
// the order "larger key first, then lower index". `prefix` holds key bits above `shift` that every pair
// shares.
template <class K>
std::pair<K, int32_t> radix_select(std::vector<K> keys, std::vector<int32_t> index, int64_t rank, K prefix,
                                   int shift) {
  while (shift > 0) {
    const int width = std::min(shift, kRadixBits);
    shift -= width;
    int64_t count[kRadixBins] = {};
    for (K key : keys) ++count[radix_digit(key, shift, width)];
    int digit = (1 << width) - 1;
    for (; count[digit] < rank; --digit) rank -= count[digit];
    size_t kept = 0;
    for (size_t j = 0; j < keys.size(); ++j)
      if (radix_digit(keys[j], shift, width) == uint32_t(digit)) keys[kept] = keys[j], index[kept++] = index[j];
    keys.resize(kept);
    index.resize(kept);
    prefix = K((prefix << width) | K(digit));
  }
  return {prefix, index[size_t(rank - 1)]};  // every remaining key equals prefix; ties by index order
}

// Writes the ascending indices of the top-k (k >= 1) among the candidates, which must hold them all.
template <class K>
void select_from_candidates(const std::vector<Candidates<K>>& lists, int64_t k, int key_bits_, int32_t* out) {
  const int chunks = int(lists.size());
  // The top digit, from a histogram over every candidate (in parallel) ...
  const int shift = key_bits_ - kRadixBits;
  std::vector<int64_t> hist(size_t(chunks) * kRadixBins, 0);
  parallel_chunks(chunks, chunks, [&](int c, int64_t, int64_t) {
    int64_t* h = hist.data() + size_t(c) * kRadixBins;
    for (K key : lists[size_t(c)].key) ++h[key >> shift];
  });
  int64_t rank = k;
  int digit = kRadixBins - 1;
  for (;; --digit) {
    int64_t count = 0;
    for (int c = 0; c < chunks; ++c) count += hist[size_t(c) * kRadixBins + digit];
    if (count >= rank) break;
    rank -= count;
  }
  // ... then the remaining digits among the candidates that share it, gathered in index order (each
  // chunk's share and place follow from its histogram).
  std::vector<int64_t> start(size_t(chunks) + 1, 0);
  for (int c = 0; c < chunks; ++c) start[size_t(c) + 1] = start[size_t(c)] + hist[size_t(c) * kRadixBins + digit];
  std::vector<K> keys(static_cast<size_t>(start[size_t(chunks)]));
  std::vector<int32_t> index(keys.size());
  parallel_chunks(chunks, chunks, [&](int c, int64_t, int64_t) {
    const auto& l = lists[size_t(c)];
    size_t o = size_t(start[size_t(c)]);
    for (size_t j = 0; j < l.key.size(); ++j)
      if ((l.key[j] >> shift) == K(digit)) keys[o] = l.key[j], index[o++] = l.index[j];
  });
  const auto [threshold, last_tied] = radix_select(std::move(keys), std::move(index), rank, K(digit), shift);

  // The top-k is { key > threshold } plus { key == threshold, index <= last_tied }: compact it in index
  // order (the lists are in chunk order, each ascending).
  auto keep = [&](K key, int32_t i) { return key > threshold || (key == threshold && i <= last_tied); };
  std::vector<int64_t> offset(size_t(chunks) + 1, 0);
  parallel_chunks(chunks, chunks, [&](int c, int64_t, int64_t) {
    const auto& l = lists[size_t(c)];
    int64_t kept = 0;
    for (size_t j = 0; j < l.key.size(); ++j) kept += keep(l.key[j], l.index[j]);
    offset[size_t(c) + 1] = kept;
  });
  for (int c = 0; c < chunks; ++c) offset[size_t(c) + 1] += offset[size_t(c)];
  check(offset[size_t(chunks)] == k, "topk: internal error, selected " + std::to_string(offset[size_t(chunks)]) +
                                         " of k=" + std::to_string(k));
  parallel_chunks(chunks, chunks, [&](int c, int64_t, int64_t) {
    const auto& l = lists[size_t(c)];
    int64_t o = offset[size_t(c)];
    for (size_t j = 0; j < l.key.size(); ++j)
      if (keep(l.key[j], l.index[j])) out[o++] = l.index[j];
  });
}

// Top-k of n elements (1 <= k <= n): sample_key(i) is the key element i will have; first_pass_key(i) is
// called once per element, in order, by the first filtering pass and returns that key (it may store it,
// as ef_topk's fused add does); key_at(i) reads the final key for a fallback pass.
template <class T, class SampleKey, class FirstPassKey, class KeyAt>
void topk_indices(int64_t n, int64_t k, SampleKey sample_key, FirstPassKey first_pass_key, KeyAt key_at,
                  int32_t* out) {
  using K = key_t<T>;
  const int chunks = chunk_count(n);
  std::vector<Candidates<K>> lists(static_cast<size_t>(chunks));
  // expected: the fraction of elements expected to pass, to reserve the lists once.
  auto filter = [&](K threshold, double expected, auto key_of) {
    parallel_chunks(n, chunks, [&](int c, int64_t begin, int64_t end) {
      Candidates<K>& l = lists[size_t(c)];
      l = Candidates<K>{};
      const size_t reserve = size_t(expected * double(end - begin) * 1.1) + 1024;
      l.index.reserve(reserve);
      l.key.reserve(reserve);
      collect(begin, end, threshold, key_of, l);
    });
  };
  const auto [threshold, fraction] = sample_threshold<K>(n, k, sample_key);
  filter(threshold, fraction, first_pass_key);
  if (total_size(lists) < k)
    filter(histogram_threshold<K>(n, k, key_bits<T>, key_at, chunks), double(k) / double(n), key_at);
  select_from_candidates(lists, k, key_bits<T>, out);
}

template <class T, class Index>
void gather(const T* src, const Index* index, int64_t k, T* dst) {
  parallel_for(k, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) dst[j] = src[index[j]];
  });
}

void iota(int32_t* out, int64_t n) {
  parallel_for(n, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = int32_t(i);
  });
}

}  // namespace

void topk(const Array& x, int64_t k, const Array& values, const Array& indices, Stream) {
  with_topk_args(x, k, values, indices, [&](const auto* data, auto* vals, int32_t* out) {
    using T = std::remove_pointer_t<decltype(vals)>;
    auto key_at = [data](int64_t i) { return magnitude_key(data[i]); };
    if (k == x.size)
      iota(out, k);
    else if (k > 0)
      topk_indices<T>(x.size, k, key_at, key_at, key_at, out);
    gather(data, out, k, vals);
  });
}

namespace {

template <class G, class R>
void ef_topk_typed(const G* grad, R* residual, int64_t n, int64_t k, R* values, int32_t* out) {
  auto sum = [=](int64_t i) { return from_acc<R>(acc_t<R>(to_acc(residual[i])) + acc_t<R>(to_acc(grad[i]))); };
  // The fused pass: p = residual + grad (in acc_t), stored back into residual, returning p's key.
  auto add_and_key = [=](int64_t i) {
    const R p = sum(i);
    residual[i] = p;
    return magnitude_key(p);
  };
  if (k == 0 || k == n) {
    parallel_for(n, 1 << 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) add_and_key(i);
    });
    iota(out, k);
  } else {
    auto sample_key = [=](int64_t i) { return magnitude_key(sum(i)); };
    auto key_at = [=](int64_t i) { return magnitude_key(residual[i]); };
    topk_indices<R>(n, k, sample_key, add_and_key, key_at, out);
  }
  parallel_for(k, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      values[j] = residual[out[j]];
      residual[out[j]] = from_acc<R>(0);
    }
  });
}

}  // namespace

void ef_topk(const Array& grad, const Array& residual, int64_t k, const Array& values, const Array& indices,
             Stream) {
  with_ef_topk_args(grad, residual, k, values, indices, [&](const auto* g, auto* r, auto* vals, int32_t* out) {
    ef_topk_typed(g, r, grad.size, k, vals, out);
  });
}

}  // namespace ck::CK_BACKEND
