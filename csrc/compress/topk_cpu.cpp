// Magnitude top-k on the CPU: a two-pass radix select.
//
// Pass 1 builds, per thread, a histogram of the top kFirstBits of every key (fused with the
// error-feedback add in ef_topk). The histograms name the bin B that holds the k-th largest key, how many
// keys lie above it, and where each thread's candidates (keys in bin >= B) go in a shared list.
// Pass 2 writes those candidates' indices, in index order. The exact k-th element (T, I) in the order
// "larger key first, then lower index" is then resolved among the few candidates in bin B, and the
// selection is exactly { i : key_i > T or (key_i == T and i <= I) }, compacted from the candidate list in
// index order. Two reads of the input, whatever the distribution; extra memory is the candidate list
// (about k entries for continuous data, up to n when most keys tie).
#include <vector>

#include "../common/parallel.h"
#include "api.h"
#include "args.h"
#include "topk.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int kFirstBits = 12;  // 4096 bins: the per-thread histogram stays in L1
constexpr int kBins = 1 << kFirstBits;
constexpr int kRefineBits = 8;

template <class T> constexpr int first_shift() { return key_bits<T> - kFirstBits; }

// Walks bins from the largest down and returns the bin that holds the `rank`-th largest key (1-based);
// `*above` receives the number of keys in the bins above it.
inline uint32_t bin_of_rank(const int64_t* count, int bins, int64_t rank, int64_t* above) {
  int64_t seen = 0;
  int b = bins - 1;
  while (seen + count[b] < rank) seen += count[b--];
  *above = seen;
  return uint32_t(b);
}

// Writes, in parallel and in index order, every i in [0, n) with keep(i) to out; returns how many.
template <class Keep>
int64_t ordered_compact(int64_t n, const int32_t* in, int32_t* out, Keep keep) {
  const int chunks = chunk_count(n, 1 << 14);
  std::vector<int64_t> offset(chunks + 1, 0);
  parallel_chunks(n, chunks, [&](int c, int64_t begin, int64_t end) {
    int64_t kept = 0;
    for (int64_t j = begin; j < end; ++j) kept += keep(in[j]);
    offset[c + 1] = kept;
  });
  for (int c = 0; c < chunks; ++c) offset[c + 1] += offset[c];
  parallel_chunks(n, chunks, [&](int c, int64_t begin, int64_t end) {
    int64_t o = offset[c];
    for (int64_t j = begin; j < end; ++j)
      if (keep(in[j])) out[o++] = in[j];
  });
  return offset[chunks];
}

// Given the pass-1 histograms (chunks x kBins, chunk c covering parallel_chunks' c-th range), writes the
// ascending indices of the top-k keys to out. key_at(i) must return magnitude_key of element i.
template <class T, class KeyAt>
void select_from_histograms(int64_t n, int64_t k, int chunks, const std::vector<uint32_t>& hist, KeyAt key_at,
                            int32_t* out) {
  using K = key_t<T>;
  constexpr int shift0 = first_shift<T>();

  std::vector<int64_t> total(kBins, 0);
  for (int c = 0; c < chunks; ++c)
    for (int b = 0; b < kBins; ++b) total[b] += hist[size_t(c) * kBins + b];
  int64_t above = 0;
  const uint32_t bin = bin_of_rank(total.data(), kBins, k, &above);

  // Candidates: every element whose first digit is >= bin, listed in index order.
  std::vector<int64_t> offset(chunks + 1, 0);
  for (int c = 0; c < chunks; ++c) {
    int64_t count = 0;
    for (int b = int(bin); b < kBins; ++b) count += hist[size_t(c) * kBins + b];
    offset[c + 1] = offset[c] + count;
  }
  std::vector<int32_t> candidates(static_cast<size_t>(offset[chunks]));
  parallel_chunks(n, chunks, [&](int c, int64_t begin, int64_t end) {
    int64_t o = offset[c];
    for (int64_t i = begin; i < end; ++i)
      if ((key_at(i) >> shift0) >= bin) candidates[size_t(o++)] = int32_t(i);
  });

  // Resolve the k-th element among the candidates in `bin`: radix select on the remaining key bits.
  std::vector<K> keys;
  std::vector<int32_t> index;
  for (int32_t i : candidates) {
    const K key = key_at(i);
    if ((key >> shift0) == bin) keys.push_back(key), index.push_back(i);
  }
  int64_t rank = k - above;  // rank of the k-th element among the keys in `bin`, 1-based
  for (int shift = shift0; shift > 0;) {
    const int width = shift < kRefineBits ? shift : kRefineBits;
    shift -= width;
    int64_t count[1 << kRefineBits] = {};
    for (K key : keys) ++count[radix_digit(key, shift, width)];
    int64_t digit_above = 0;
    const uint32_t digit = bin_of_rank(count, 1 << width, rank, &digit_above);
    rank -= digit_above;
    size_t kept = 0;
    for (size_t j = 0; j < keys.size(); ++j)
      if (radix_digit(keys[j], shift, width) == digit) keys[kept] = keys[j], index[kept++] = index[j];
    keys.resize(kept);
    index.resize(kept);
  }
  const K threshold = keys[0];                  // every remaining key equals the k-th key
  const int32_t last_tied = index[size_t(rank - 1)];  // ties go to the lower index

  const int64_t written = ordered_compact(int64_t(candidates.size()), candidates.data(), out, [&](int32_t i) {
    const K key = key_at(i);
    return key > threshold || (key == threshold && i <= last_tied);
  });
  check(written == k, "topk: internal error, selected " + std::to_string(written) + " of k=" + std::to_string(k));
}

// Top-k with pass 1 supplied by the caller: first_pass(begin, end, hist) must histogram the first digit
// of the keys of [begin, end) (and may do other work on that range).
template <class T, class KeyAt, class FirstPass>
void topk_indices(int64_t n, int64_t k, KeyAt key_at, FirstPass first_pass, int32_t* out) {
  const int chunks = chunk_count(n);
  std::vector<uint32_t> hist(size_t(chunks) * kBins, 0);
  parallel_chunks(n, chunks, [&](int c, int64_t begin, int64_t end) {
    first_pass(begin, end, hist.data() + size_t(c) * kBins);
  });
  if (k == 0) return;
  if (k == n) {
    parallel_for(n, 1 << 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) out[i] = int32_t(i);
    });
    return;
  }
  select_from_histograms<T>(n, k, chunks, hist, key_at, out);
}

template <class T>
void gather(const T* src, const int32_t* index, int64_t k, T* dst) {
  parallel_for(k, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) dst[j] = src[index[j]];
  });
}

}  // namespace

void topk(const Array& x, int64_t k, const Array& values, const Array& indices, Stream) {
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    check_size_fits_int32(x.size, "x");
    check_k(x.size, k);
    check_sparse_outputs<T>(k, values, indices);
    if (k == 0) return;
    const T* data = static_cast<const T*>(x.data);
    auto key_at = [data](int64_t i) { return magnitude_key(data[i]); };
    auto histogram = [&](int64_t begin, int64_t end, uint32_t* hist) {
      for (int64_t i = begin; i < end; ++i) ++hist[key_at(i) >> first_shift<T>()];
    };
    int32_t* out = indices.as<int32_t>("indices");
    topk_indices<T>(x.size, k, key_at, histogram, out);
    gather(data, out, k, values.as<T>("values"));
  });
}

namespace {

template <class G, class R>
void ef_topk_typed(const G* grad, R* residual, int64_t n, int64_t k, R* values, int32_t* out) {
  auto key_at = [residual](int64_t i) { return magnitude_key(residual[i]); };
  // Pass 1, fused: p = residual + grad (in acc_t), stored back into residual, and histogrammed.
  auto add_and_histogram = [&](int64_t begin, int64_t end, uint32_t* hist) {
    for (int64_t i = begin; i < end; ++i) {
      const R p = from_acc<R>(acc_t<R>(to_acc(residual[i])) + acc_t<R>(to_acc(grad[i])));
      residual[i] = p;
      ++hist[magnitude_key(p) >> first_shift<R>()];
    }
  };
  topk_indices<R>(n, k, key_at, add_and_histogram, out);
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
  check_size_fits_int32(grad.size, "grad");
  dispatch_grad_residual(grad, residual, [&](auto gtag, auto rtag) {
    using G = typename decltype(gtag)::type;
    using R = typename decltype(rtag)::type;
    check_k(residual.size, k);
    check_sparse_outputs<R>(k, values, indices);
    ef_topk_typed(static_cast<const G*>(grad.data), static_cast<R*>(residual.data), grad.size, k,
                  values.as<R>("values"), indices.as<int32_t>("indices"));
  });
}

}  // namespace ck::CK_BACKEND
