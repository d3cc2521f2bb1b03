// Stable counting sort of the edges by key on the CPU. The edges are cut into chunks; each chunk counts
// its keys, an exclusive scan over (key, chunk) gives each chunk its first slot per key, and each chunk
// then places its edges in edge order. Chunks are only used when the edge list is long compared to the
// node count (the per-chunk histograms cost chunks x num_nodes words).
#include <algorithm>
#include <vector>

#include "../common/parallel.h"
#include "csr.h"

namespace ck::CK_BACKEND {
namespace {

template <class I>
void build(const I* keys, const I* values, int64_t e, int64_t n, int64_t* indptr, I* sorted, int64_t* eid,
           const std::string& keys_name, const std::string& values_name) {
  // validation first: nothing is written for a bad input
  const int checks = chunk_count(e, 1 << 16);
  std::vector<char> bad_key(size_t(checks), 0), bad_value(size_t(checks), 0);
  parallel_chunks(e, checks, [&](int c, int64_t begin, int64_t end) {
    bool bk = false, bv = false;
    for (int64_t i = begin; i < end; ++i) {
      bk |= uint64_t(int64_t(keys[i])) >= uint64_t(n);
      bv |= uint64_t(int64_t(values[i])) >= uint64_t(n);
    }
    bad_key[size_t(c)] = bk, bad_value[size_t(c)] = bv;
  });
  for (int c = 0; c < checks; ++c) {
    check(!bad_key[size_t(c)], keys_name + ": expected node indices in [0, " + std::to_string(n) + ")");
    check(!bad_value[size_t(c)], values_name + ": expected node indices in [0, " + std::to_string(n) + ")");
  }
  const int chunks = (e >= (int64_t(1) << 16) && e >= 4 * n) ? chunk_count(e, 1 << 16) : 1;
  if (chunks == 1) {
    std::fill(indptr, indptr + n + 1, int64_t(0));
    for (int64_t i = 0; i < e; ++i) ++indptr[int64_t(keys[i]) + 1];
    for (int64_t k = 0; k < n; ++k) indptr[k + 1] += indptr[k];
    std::vector<int64_t> next(indptr, indptr + n);
    for (int64_t i = 0; i < e; ++i) {
      const int64_t s = next[size_t(keys[i])]++;
      eid[s] = i;
      sorted[s] = values[i];
    }
    return;
  }
  std::vector<int64_t> hist(size_t(chunks) * size_t(n), 0);  // hist[c * n + k]
  parallel_chunks(e, chunks, [&](int c, int64_t begin, int64_t end) {
    int64_t* h = hist.data() + size_t(c) * size_t(n);
    for (int64_t i = begin; i < end; ++i) ++h[keys[i]];
  });
  // exclusive scan in (key, chunk) order: hist[c][k] becomes chunk c's first slot for key k
  int64_t total = 0;
  for (int64_t k = 0; k < n; ++k) {
    indptr[k] = total;
    for (int c = 0; c < chunks; ++c) {
      const int64_t count = hist[size_t(c) * size_t(n) + size_t(k)];
      hist[size_t(c) * size_t(n) + size_t(k)] = total;
      total += count;
    }
  }
  indptr[n] = total;
  parallel_chunks(e, chunks, [&](int c, int64_t begin, int64_t end) {
    int64_t* next = hist.data() + size_t(c) * size_t(n);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t s = next[keys[i]]++;
      eid[s] = i;
      sorted[s] = values[i];
    }
  });
}

}  // namespace

void csr_build(const Array& keys, const Array& values, int64_t num_nodes, const Array& indptr,
               const Array& sorted_values, const Array& eid, const std::string& keys_name,
               const std::string& values_name, Stream) {
  graph::check_csr_args(keys, values, num_nodes, indptr, sorted_values, eid);
  dispatch_index(keys.dtype, keys_name.c_str(), [&](auto tag) {
    using I = typename decltype(tag)::type;
    build<I>(static_cast<const I*>(keys.data), static_cast<const I*>(values.data), keys.size, num_nodes,
             static_cast<int64_t*>(indptr.data), static_cast<I*>(sorted_values.data),
             static_cast<int64_t*>(eid.data), keys_name, values_name);
  });
}

}  // namespace ck::CK_BACKEND
