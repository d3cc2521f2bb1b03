// Coordinate-wise rules on the CPU (coord.h): tiles of W coordinates (W * sizeof(key) = 256 bytes) in
// parallel over OpenMP. Per tile, each worker's W values are read once (contiguously) into an n x W tile of
// order keys on the stack (at most 64 KiB: it stays in L1/L2), a pruned sorting network runs on whole tile
// rows (each comparator is a vector min and max over W lanes: branch-free, vectorised across coordinates),
// and the rule's reduction reads the ordered rows, again vectorised across the W lanes.
//
// The network is pruned for the rule: going backwards, a comparator is dropped when both of its wires
// flow (untouched by kept comparators) into outputs the rule never reads (or, in general, into one group
// of outputs used only as a set; no rule uses that, see rule_groups). More than kMaxNetwork
// workers: each tile column is put in order by std::sort instead (O(n log n) per coordinate).
//
// Every loop is compiled twice, for baseline x86-64 and for AVX-512 (picked at run time).
#include <algorithm>
#include <vector>

#include "../common/cpu_features.h"
#include "../common/parallel.h"
#include "coord.h"

namespace ck::CK_BACKEND {
namespace {

#ifndef CK_COORD_TILE_BYTES  // a knob for tuning runs: 128 to 1024 bytes measured alike (n = 32, fp32)
#define CK_COORD_TILE_BYTES 256
#endif
constexpr int kTileBytes = CK_COORD_TILE_BYTES;
constexpr int kMaxNetwork = 256;
constexpr int kTilesPerGrain = 16;

struct Comparator {
  int32_t a, b;  // wires (tile rows), a < b: a gets the min
};

// The comparators of batcher_network(n) that outputs in `group` depend on. group[p] for final position
// p: 0 = never read, g >= 1 = read as part of group g (a singleton group when read on its own).
std::vector<Comparator> pruned_network(int n, const std::vector<int>& group) {
  std::vector<Comparator> all;
  batcher_network(n, [&](int a, int b) { all.push_back({a, b}); });
  std::vector<int> label(group);  // -1: needed exactly
  std::vector<Comparator> kept;
  for (size_t c = all.size(); c-- > 0;) {
    const Comparator cmp = all[c];
    if (label[cmp.a] == label[cmp.b] && label[cmp.a] >= 0) continue;
    label[cmp.a] = label[cmp.b] = -1;
    kept.push_back(cmp);
  }
  std::reverse(kept.begin(), kept.end());
  return kept;
}

// Which sorted positions each rule reads (see pruned_network). Only the median prunes: the summing rules
// need every position they add in its exact rank, so that their sums run in one order (the ascending
// one) whatever the workers' order — a set-valued group would leave the sum order to the input order.
std::vector<int> rule_groups(int n, const CoordArgs& args) {
  std::vector<int> group(size_t(n), 0);
  const int lo = (n - 1) / 2, hi = n / 2, f = int(args.f);
  int next = 1;
  switch (args.rule) {
    case CoordRule::median:
      if (args.even != EvenMedian::upper) group[lo] = next++;
      if (args.even != EvenMedian::lower && hi != lo) group[hi] = next++;
      break;
    case CoordRule::trimmed_mean:  // the middle n - 2f ranks
      for (int p = f; p < n - f; ++p) group[p] = next++;
      break;
    case CoordRule::meamed:  // every rank can be in the window
    case CoordRule::phocas:
      for (int p = 0; p < n; ++p) group[p] = next++;
      break;
  }
  return group;
}

template <class T>
struct Tile {
  using K = order_key_t<T>;
  using A = acc_t<T>;
  static constexpr int W = kTileBytes / int(sizeof(K));
};

// One comparator on W lanes: a <- min(a, b), b <- max(a, b). Distinct rows (restrict: no aliasing check).
template <class K, int W>
__attribute__((always_inline)) inline void compare_rows(K* __restrict a, K* __restrict b) {
  for (int l = 0; l < W; ++l) {
    const K x = a[l], y = b[l];
    a[l] = x < y ? x : y;
    b[l] = x < y ? y : x;
  }
}

// The reductions read the ordered tile: row p holds the p-th smallest value of each of the W columns.
template <class T>
__attribute__((always_inline)) inline void reduce_tile(const order_key_t<T>* __restrict tile, int n, const CoordArgs& args,
                                                       int w, T* __restrict out) {
  using K = order_key_t<T>;
  using A = acc_t<T>;
  constexpr int W = Tile<T>::W;
  const int lo = (n - 1) / 2, hi = n / 2, f = int(args.f);
  if (args.rule == CoordRule::median) {
    const K* klo = tile + lo * W;
    const K* khi = tile + hi * W;
    for (int l = 0; l < w; ++l) out[l] = round_to<T>(median_of<T>(klo[l], khi[l], args.even));
    return;
  }
  const int m = n - 2 * f;  // the trimmed middle
  A mid[W];
  for (int l = 0; l < W; ++l) mid[l] = A(0);
  for (int p = f; p < n - f; ++p) {
    const K* row = tile + p * W;
    for (int l = 0; l < W; ++l) mid[l] += key_value<T>(row[l]);
  }
  if (args.rule == CoordRule::trimmed_mean) {
    for (int l = 0; l < w; ++l) out[l] = from_acc<T>(mid[l] / A(m));
    return;
  }
  // meamed / phocas: the n - f values nearest the center are the window [s, s + n - f) of the order, where
  // s = the number of left ends that are at least as far as their opposite right ends (coord.h).
  double center[W], twice[W];
  if (args.rule == CoordRule::meamed) {
    for (int l = 0; l < W; ++l) {
      const double a = double(key_value<T>(tile[lo * W + l])), b = double(key_value<T>(tile[hi * W + l]));
      center[l] = midpoint(a, b);
      twice[l] = a + b;
    }
  } else {
    for (int l = 0; l < W; ++l) {
      center[l] = double(mid[l] / A(m));
      twice[l] = 2 * center[l];
    }
  }
  // s per lane: the number of k in [1, f] whose left end x_(k-1) is at least as far from the center as the
  // right end x_(n-1-f+k) (left_is_farther, written out here in a form the compiler vectorises)
  int32_t s[W];
  for (int l = 0; l < W; ++l) s[l] = 0;
  for (int k = 1; k <= f; ++k) {
    const K* left = tile + (k - 1) * W;
    const K* right = tile + (n - 1 - f + k) * W;
    double xl[W], xr[W];
    for (int l = 0; l < W; ++l) xl[l] = double(key_value<T>(left[l]));
    for (int l = 0; l < W; ++l) xr[l] = double(key_value<T>(right[l]));
    for (int l = 0; l < W; ++l) {
      const double a = xl[l], b = xr[l], c = center[l];
      const int32_t exact = int32_t(a - a == 0) & int32_t(b - b == 0) & int32_t(sizeof(T) < 8);
      const int32_t by_sum = int32_t(a + b <= twice[l]);
      const int32_t by_distance = int32_t(c - a >= b - c);
      s[l] += ((exact & by_sum) | ((exact ^ 1) & by_distance)) & int32_t(b == b);
    }
  }
  A acc[W];
  for (int l = 0; l < W; ++l) acc[l] = A(0);
  for (int p = 0; p < n; ++p) {
    const K* row = tile + p * W;
    for (int l = 0; l < W; ++l) {
      const A v = key_value<T>(row[l]);
      acc[l] += (int32_t(p >= s[l]) & int32_t(p < s[l] + n - f)) ? v : A(0);
    }
  }
  for (int l = 0; l < w; ++l) out[l] = from_acc<T>(acc[l] / A(n - f));
}

template <class T>
__attribute__((always_inline)) inline void coord_range(const RowView<T> X, const CoordArgs& args,
                                                       const Comparator* net, int64_t comparators,
                                                       order_key_t<T>* __restrict tile, int64_t begin, int64_t end,
                                                       T* out) {
  using K = order_key_t<T>;
  constexpr int W = Tile<T>::W;
  const int n = int(X.n);
  std::vector<K> column;
  for (int64_t t0 = begin; t0 < end; t0 += W) {
    const int w = int(std::min<int64_t>(W, end - t0));
    for (int i = 0; i < n; ++i) {
      const T* __restrict x = X.row(i) + t0;
      K* __restrict row = tile + i * W;
      if (w == W) {
        for (int l = 0; l < W; ++l) row[l] = order_key(x[l]);
      } else {
        for (int l = 0; l < w; ++l) row[l] = order_key(x[l]);
        for (int l = w; l < W; ++l) row[l] = K(0);
      }
    }
    if (net) {
      for (int64_t c = 0; c < comparators; ++c) compare_rows<K, W>(tile + net[c].a * W, tile + net[c].b * W);
    } else {
      column.resize(size_t(n));
      for (int l = 0; l < w; ++l) {
        for (int i = 0; i < n; ++i) column[size_t(i)] = tile[i * W + l];
        std::sort(column.begin(), column.end());
        out[t0 + l] = reduce_column<T>(column.data(), 1, n, args);
      }
      continue;
    }
    reduce_tile<T>(tile, n, args, w, out + t0);
  }
}

template <class T>
void coord_range_baseline(const RowView<T> X, const CoordArgs& args, const Comparator* net, int64_t comparators,
                          order_key_t<T>* tile, int64_t begin, int64_t end, T* out) {
  coord_range<T>(X, args, net, comparators, tile, begin, end, out);
}

#ifdef CK_AVX512
template <class T>
CK_AVX512 void coord_range_avx512(const RowView<T> X, const CoordArgs& args, const Comparator* net,
                                  int64_t comparators, order_key_t<T>* tile, int64_t begin, int64_t end, T* out) {
  coord_range<T>(X, args, net, comparators, tile, begin, end, out);
}
#endif

template <class T>
void coord_cpu(const Rows& rows, const CoordArgs& args, T* out) {
  using K = order_key_t<T>;
  constexpr int W = Tile<T>::W;
  const int n = int(rows.n);
  const bool network = n <= kMaxNetwork;
  const std::vector<Comparator> net = network ? pruned_network(n, rule_groups(n, args)) : std::vector<Comparator>();
  const RowView<T> X = host_view<T>(rows);
  const bool avx512 = has_avx512();
  parallel_for(rows.d, int64_t(W) * kTilesPerGrain, [&](int64_t begin, int64_t end) {
    alignas(64) K stack_tile[kMaxNetwork * W];  // 64 KiB
    std::vector<K> heap_tile(network ? 0 : size_t(n) * W);
    K* tile = network ? stack_tile : heap_tile.data();
    const Comparator* c = network ? net.data() : nullptr;
#ifdef CK_AVX512
    if (avx512) return coord_range_avx512<T>(X, args, c, int64_t(net.size()), tile, begin, end, out);
#endif
    (void)avx512;
    coord_range_baseline<T>(X, args, c, int64_t(net.size()), tile, begin, end, out);
  });
}

}  // namespace

void coordinate_rule(const Rows& X, const CoordArgs& args, const Array& out, Stream) {
  with_coord_args(X, args, out, [&](auto tag) {
    using T = typename decltype(tag)::type;
    coord_cpu<T>(X, args, static_cast<T*>(out.data));
  });
}

}  // namespace ck::CK_BACKEND
