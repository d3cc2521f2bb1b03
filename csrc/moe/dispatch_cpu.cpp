// MoE dispatch on the CPU. plan: a chunked stable counting sort (per-chunk histograms, a scan, an ordered
// scatter of the pair indices), then one pass per expert that applies the capacity and writes the rows.
// permute / combine / pair_dots: OpenMP over output rows, each output row written once, from gathered
// input rows; combine and the dots accumulate in acc_t in slot order, so results do not depend on threads.
#include <algorithm>
#include <cstring>
#include <vector>

#include "../common/cpu_features.h"
#include "../common/parallel.h"
#include "dispatch.h"
#include "route.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int64_t kTile = 1024;  // elements of a row accumulated at once (an L1-resident acc buffer)

template <class I>
void plan_impl(const I* ids, const PlanParams& p, const Array& weights, int64_t* counts, int64_t* offsets,
               int32_t* row_of, int32_t* src_of, int32_t* block_expert) {
  const int64_t pairs = p.tokens * p.k, E = p.experts, rows = p.rows();
  const int32_t sentinel = int32_t(pairs);
  // Parallel only with many pairs: a serial plan of 64K pairs takes a fraction of a millisecond, and waking
  // threads costs microseconds on a quiet machine, milliseconds on a busy one. Same result either way.
  constexpr int64_t kParallelPairs = int64_t(1) << 18;
  const int chunks = chunk_count(pairs, kParallelPairs / 2);
  std::vector<int64_t> hist(size_t(chunks) * size_t(E), 0);
  std::vector<char> bad(size_t(chunks), 0);
  parallel_chunks(pairs, chunks, [&](int c, int64_t begin, int64_t end) {
    int64_t* h = hist.data() + size_t(c) * size_t(E);
    for (int64_t i = begin; i < end; ++i) {
      const I e = ids[i];
      if (e < 0 || e >= E) {
        bad[size_t(c)] = 1;
        return;
      }
      ++h[e];
    }
  });
  for (char b : bad) check(!b, "ids: expected expert ids in [0, num_experts = " + std::to_string(E) + ")");
  // hist[c][e] becomes the position in the expert-sorted list where chunk c's first pair of expert e goes
  std::vector<int64_t> start(size_t(E) + 1, 0);
  for (int64_t e = 0; e < E; ++e) {
    int64_t sum = start[size_t(e)];
    for (int c = 0; c < chunks; ++c) {
      int64_t& h = hist[size_t(c) * size_t(E) + size_t(e)];
      const int64_t n = h;
      h = sum;
      sum += n;
    }
    start[size_t(e) + 1] = sum;
  }
  std::vector<int32_t> sorted(static_cast<size_t>(pairs));
  parallel_chunks(pairs, chunks, [&](int c, int64_t begin, int64_t end) {
    int64_t* h = hist.data() + size_t(c) * size_t(E);
    for (int64_t i = begin; i < end; ++i) sorted[size_t(h[ids[i]]++)] = int32_t(i);
  });
  offsets[0] = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t routed = start[size_t(e) + 1] - start[size_t(e)];
    offsets[e + 1] = p.capacity >= 0 ? (e + 1) * p.region() : offsets[e] + (routed + p.align - 1) / p.align * p.align;
  }
  parallel_for(E, pairs < kParallelPairs ? E : 1, [&](int64_t e0, int64_t e1) {
    std::vector<std::pair<double, int32_t>> cand;
    for (int64_t e = e0; e < e1; ++e) {
      const int32_t* list = sorted.data() + start[size_t(e)];
      const int64_t routed = start[size_t(e) + 1] - start[size_t(e)];
      const int64_t cap = p.capacity >= 0 ? std::min(routed, p.capacity) : routed;
      // score policy: keep the pairs ranking at or above the cap-th best (weight desc, then pair index asc)
      bool by_score = p.by_score && routed > cap;
      double wt = 0;
      int32_t it = 0;
      if (by_score && cap == 0) {
        by_score = false;  // nothing kept: the position rule (first 0) says the same
      } else if (by_score) {
        cand.resize(size_t(routed));
        dispatch_weight(weights.dtype, "weights", [&](auto tag) {
          using W = typename decltype(tag)::type;
          const W* w = static_cast<const W*>(weights.data);
          for (int64_t j = 0; j < routed; ++j) cand[size_t(j)] = {double(w[list[j]]), list[j]};
        });
        auto better = [](const std::pair<double, int32_t>& a, const std::pair<double, int32_t>& b) {
          return key_greater(a.first, b.first) || (!key_greater(b.first, a.first) && a.second < b.second);
        };
        std::nth_element(cand.begin(), cand.begin() + (cap - 1), cand.end(), better);
        wt = cand[size_t(cap - 1)].first;
        it = cand[size_t(cap - 1)].second;
      }
      int64_t row = offsets[e], kept = 0;
      for (int64_t j = 0; j < routed; ++j) {
        const int32_t pair = list[j];
        bool keep;
        if (by_score) {
          double w = 0;
          dispatch_weight(weights.dtype, "weights", [&](auto tag) {
            using W = typename decltype(tag)::type;
            w = double(static_cast<const W*>(weights.data)[pair]);
          });
          keep = key_greater(w, wt) || (!key_greater(wt, w) && pair <= it);
        } else {
          keep = j < cap;
        }
        if (keep) {
          row_of[pair] = int32_t(row);
          src_of[row++] = pair;
          ++kept;
        } else {
          row_of[pair] = -1;
        }
      }
      for (; row < offsets[e + 1]; ++row) src_of[row] = sentinel;
      counts[e] = kept;
    }
  });
  for (int64_t r = offsets[E]; r < rows; ++r) src_of[r] = sentinel;
  if (p.align > 1) {
    const int64_t blocks = rows / p.align;
    for (int64_t b = offsets[E] / p.align; b < blocks; ++b) block_expert[b] = -1;
    for (int64_t e = 0; e < E; ++e)
      for (int64_t b = offsets[e] / p.align; b < offsets[e + 1] / p.align; ++b) block_expert[b] = int32_t(e);
  }
}

// ---- row moves ----------------------------------------------------------------------------------------

// Outputs larger than this are written with non-temporal (streaming) stores: they bypass the caches, so a
// written line is not first read for ownership (a third of the traffic of a copy) and does not evict the
// inputs. Smaller outputs stay in the cache for whoever reads them next.
constexpr int64_t kStreamBytes = int64_t(8) << 20;

// dst[0, n) <- src[0, n), streaming the 16-byte-aligned body of dst (SSE2: every x86-64).
CK_ALWAYS_INLINE void copy_bytes(void* dst_, const void* src_, size_t n, bool stream) {
  if (n == 0) return;  // an empty array's pointer may be null, and memcpy(null, ., 0) is undefined
#if defined(__SSE2__)
  if (stream) {
    char* dst = static_cast<char*>(dst_);
    const char* src = static_cast<const char*>(src_);
    size_t head = (16 - reinterpret_cast<uintptr_t>(dst) % 16) % 16;
    if (head > n) head = n;
    std::memcpy(dst, src, head);
    dst += head, src += head, n -= head;
    const size_t body = n & ~size_t(15);
    for (size_t i = 0; i < body; i += 16)
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i), _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
    std::memcpy(dst + body, src + body, n - body);
    return;
  }
#endif
  (void)stream;
  std::memcpy(dst_, src_, n);
}

CK_ALWAYS_INLINE void zero_bytes(void* dst_, size_t n, bool stream) {
  if (n == 0) return;  // as copy_bytes: memset(null, 0, 0) is undefined
#if defined(__SSE2__)
  if (stream) {
    char* dst = static_cast<char*>(dst_);
    size_t head = (16 - reinterpret_cast<uintptr_t>(dst) % 16) % 16;
    if (head > n) head = n;
    std::memset(dst, 0, head);
    dst += head, n -= head;
    const size_t body = n & ~size_t(15);
    for (size_t i = 0; i < body; i += 16) _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i), _mm_setzero_si128());
    std::memset(dst + body, 0, n - body);
    return;
  }
#endif
  (void)stream;
  std::memset(dst_, 0, n);
}

// Orders this thread's streaming stores before whatever follows the parallel region.
CK_ALWAYS_INLINE void stream_fence(bool stream) {
#if defined(__SSE2__)
  if (stream) _mm_sfence();
#endif
  (void)stream;
}

template <class X, class W>
CK_ALWAYS_INLINE void scale_row(const X* __restrict__ x, acc_t<X> w, X* __restrict__ out, int64_t h, bool stream) {
  alignas(64) X tile[kTile];
  for (int64_t i0 = 0; i0 < h; i0 += kTile) {
    const int64_t n = std::min(kTile, h - i0);
    for (int64_t i = 0; i < n; ++i) tile[i] = from_acc<X>(acc_t<X>(to_acc(x[i0 + i])) * w);
    copy_bytes(out + i0, tile, size_t(n) * sizeof(X), stream);
  }
}

template <class X, class W>
CK_ALWAYS_INLINE void permute_rows(const X* x, const int32_t* src_of, const W* weights, const MoveParams& p, X* out,
                                   int64_t r0, int64_t r1, char* bad) {
  const int64_t h = p.hidden, pairs = p.tokens * p.k;
  const bool stream = p.rows * h * int64_t(sizeof(X)) >= kStreamBytes;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t s = src_of[r];
    X* o = out + r * h;
    if (s == pairs) {
      zero_bytes(o, size_t(h) * sizeof(X), stream);
    } else if (s < 0 || s > pairs) {
      *bad = 1;
      break;
    } else if (weights) {
      scale_row<X, W>(x + s / p.k * h, acc_t<X>(weights[s]), o, h, stream);
    } else {
      copy_bytes(o, x + s / p.k * h, size_t(h) * sizeof(X), stream);
    }
  }
  stream_fence(stream);
}

template <class X, class W>
CK_ALWAYS_INLINE void combine_rows(const X* y, const int32_t* row_of, const W* weights, const MoveParams& p, X* out,
                                   int64_t t0, int64_t t1, char* bad) {
  using A = acc_t<X>;
  const int64_t h = p.hidden, k = p.k;
  const bool stream = p.tokens * h * int64_t(sizeof(X)) >= kStreamBytes;
  alignas(64) A acc[kTile];
  alignas(64) X tile[kTile];
  for (int64_t t = t0; t < t1; ++t) {
    const int32_t* rows = row_of + t * k;
    bool ok = true;
    for (int64_t j = 0; j < k; ++j) ok = ok && rows[j] >= -1 && rows[j] < p.rows;
    if (!ok) {
      *bad = 1;
      break;
    }
    for (int64_t i0 = 0; i0 < h; i0 += kTile) {
      const int64_t n = std::min(kTile, h - i0);
      for (int64_t i = 0; i < n; ++i) acc[i] = A(0);
      for (int64_t j = 0; j < k; ++j) {
        if (rows[j] < 0) continue;
        const X* __restrict__ src = y + int64_t(rows[j]) * h + i0;
        if (weights) {
          const A w = A(weights[t * k + j]);
          for (int64_t i = 0; i < n; ++i) acc[i] += w * A(to_acc(src[i]));
        } else {
          for (int64_t i = 0; i < n; ++i) acc[i] += A(to_acc(src[i]));
        }
      }
      for (int64_t i = 0; i < n; ++i) tile[i] = from_acc<X>(acc[i]);
      copy_bytes(out + t * h + i0, tile, size_t(n) * sizeof(X), stream);
    }
  }
  stream_fence(stream);
}

// dot(a, b) with 16 independent partial sums (vectorisable without reassociation), combined in a fixed order.
template <class X>
CK_ALWAYS_INLINE acc_t<X> dot_row(const X* __restrict__ a, const X* __restrict__ b, int64_t h) {
  using A = acc_t<X>;
  A part[16] = {};
  int64_t i = 0;
  for (; i + 16 <= h; i += 16)
    for (int l = 0; l < 16; ++l) part[l] += A(to_acc(a[i + l])) * A(to_acc(b[i + l]));
  for (int l = 0; i < h; ++i, ++l) part[l] += A(to_acc(a[i])) * A(to_acc(b[i]));
  for (int s = 8; s >= 1; s /= 2)
    for (int l = 0; l < s; ++l) part[l] += part[l + s];
  return part[0];
}

template <class X, class W>
CK_ALWAYS_INLINE void dot_rows(const X* a, const X* b, const int32_t* row_of, const MoveParams& p, W* out, int64_t t0,
                               int64_t t1, char* bad) {
  const int64_t h = p.hidden;
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t j = 0; j < p.k; ++j) {
      const int32_t r = row_of[t * p.k + j];
      if (r < -1 || r >= p.rows) {
        *bad = 1;
        return;
      }
      out[t * p.k + j] = r < 0 ? W(0) : W(dot_row(a + t * h, b + int64_t(r) * h, h));
    }
}

// combine's two gradients for tokens [t0, t1), grad[t] read once for its k rows: grad_y[r] = w[t, j] * grad[t]
// (as scale_row) and grad_w[t, j] = dot(grad[t], y[r]) (as dot_row: the same partial sums, same bits), for
// each kept pair (t, j) in row r. *bad = 1 when a row is out of range or src_of[r] is not t*k + j: the caller
// then runs the two separate passes, which report (or, for a plan whose halves disagree, follow) src_of.
template <class X, class W>
CK_ALWAYS_INLINE void combine_backward_tokens(const X* y, const X* g, const int32_t* row_of, const int32_t* src_of,
                                              const W* weights, const MoveParams& p, X* gy, W* gw, int64_t t0,
                                              int64_t t1, char* bad) {
  using A = acc_t<X>;
  static_assert(kTile % 16 == 0, "the dot's 16 lanes continue across tiles");
  const int64_t h = p.hidden, k = p.k;
  const bool stream = p.rows * h * int64_t(sizeof(X)) >= kStreamBytes;
  alignas(64) X tile[kTile];
  for (int64_t t = t0; t < t1; ++t) {
    const int32_t* rows = row_of + t * k;
    bool ok = true;
    for (int64_t j = 0; j < k; ++j) {
      const int32_t r = rows[j];
      ok = ok && r >= -1 && r < p.rows && (r < 0 || src_of[r] == t * k + j);
    }
    if (!ok) {
      *bad = 1;
      break;
    }
    const X* __restrict__ gt = g + t * h;
    for (int64_t j = 0; j < k; ++j) {
      const int32_t r = rows[j];
      if (r < 0) {
        gw[t * k + j] = W(0);
        continue;
      }
      const A w = A(weights[t * k + j]);
      const X* __restrict__ yr = y + int64_t(r) * h;
      X* o = gy + int64_t(r) * h;
      A part[16] = {};
      for (int64_t i0 = 0; i0 < h; i0 += kTile) {
        const int64_t n = std::min(kTile, h - i0);
        for (int64_t i = 0; i < n; ++i) tile[i] = from_acc<X>(A(to_acc(gt[i0 + i])) * w);
        int64_t i = 0;
        for (; i + 16 <= n; i += 16)
          for (int l = 0; l < 16; ++l) part[l] += A(to_acc(gt[i0 + i + l])) * A(to_acc(yr[i0 + i + l]));
        for (int l = 0; i < n; ++i, ++l) part[l] += A(to_acc(gt[i0 + i])) * A(to_acc(yr[i0 + i]));
        copy_bytes(o + i0, tile, size_t(n) * sizeof(X), stream);
      }
      for (int s = 8; s >= 1; s /= 2)
        for (int l = 0; l < s; ++l) part[l] += part[l + s];
      gw[t * k + j] = W(part[0]);
    }
  }
  stream_fence(stream);
}

// The rows no pair writes: zero the padding rows of [r0, r1); *bad = 1 when a row's pair does not point back.
template <class X>
CK_ALWAYS_INLINE void zero_padding_rows(const int32_t* src_of, const int32_t* row_of, const MoveParams& p, X* out,
                                        int64_t r0, int64_t r1, char* bad) {
  const int64_t h = p.hidden, pairs = p.tokens * p.k;
  const bool stream = p.rows * h * int64_t(sizeof(X)) >= kStreamBytes;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t s = src_of[r];
    if (s == pairs) {
      zero_bytes(out + r * h, size_t(h) * sizeof(X), stream);
    } else if (s < 0 || s > pairs || row_of[s] != r) {
      *bad = 1;
      break;
    }
  }
  stream_fence(stream);
}

// The same loops compiled twice: for any x86-64, and for AVX-512 where the CPU has it.
#define CK_MOVE_VARIANTS(name, args, call)                                                  \
  template <class X, class W> void name##_base args { call; }                               \
  template <class X, class W> CK_MOVE_TARGET void name##_avx512 args { call; }              \
  template <class X, class W> void name##_best args {                                       \
    if (has_avx512()) name##_avx512<X, W> CK_MOVE_FORWARD;                                  \
    else name##_base<X, W> CK_MOVE_FORWARD;                                                 \
  }

#ifdef CK_AVX512
#define CK_MOVE_TARGET CK_AVX512
#else
#define CK_MOVE_TARGET
#endif

#define CK_MOVE_FORWARD (x, idx, w, p, out, a0, a1, bad)
CK_MOVE_VARIANTS(permute, (const X* x, const int32_t* idx, const W* w, const MoveParams& p, X* out, int64_t a0,
                           int64_t a1, char* bad), (permute_rows<X, W>(x, idx, w, p, out, a0, a1, bad)))
CK_MOVE_VARIANTS(combine, (const X* x, const int32_t* idx, const W* w, const MoveParams& p, X* out, int64_t a0,
                           int64_t a1, char* bad), (combine_rows<X, W>(x, idx, w, p, out, a0, a1, bad)))
#undef CK_MOVE_FORWARD
#define CK_MOVE_FORWARD (x, b, idx, p, out, a0, a1, bad)
CK_MOVE_VARIANTS(dots, (const X* x, const X* b, const int32_t* idx, const MoveParams& p, W* out, int64_t a0,
                        int64_t a1, char* bad), (dot_rows<X, W>(x, b, idx, p, out, a0, a1, bad)))
#undef CK_MOVE_FORWARD
#define CK_MOVE_FORWARD (y, g, ro, so, w, p, gy, gw, a0, a1, bad)
CK_MOVE_VARIANTS(combine_backward, (const X* y, const X* g, const int32_t* ro, const int32_t* so, const W* w,
                                    const MoveParams& p, X* gy, W* gw, int64_t a0, int64_t a1, char* bad),
                 (combine_backward_tokens<X, W>(y, g, ro, so, w, p, gy, gw, a0, a1, bad)))
#undef CK_MOVE_FORWARD

// Calls f(X tag, W tag): X the rows' float type, W the weights' (float when there are none).
template <class F>
void dispatch_move(DType x, bool weighted, DType w, F&& f) {
  dispatch_float(x, "x", [&](auto xt) {
    if (!weighted) return f(xt, TypeTag<float>{});
    dispatch_weight(w, "weights", [&](auto wt) { f(xt, wt); });
  });
}

int64_t rows_grain(int64_t hidden) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(hidden, 1)); }

}  // namespace

void moe_plan(const Array& ids, const PlanParams& p, const Array& weights, const Array& counts, const Array& offsets,
              const Array& row_of, const Array& src_of, const Array& block_expert, Stream) {
  check_plan_args(ids, p, weights, counts, offsets, row_of, src_of, block_expert);
  dispatch_index(ids.dtype, "ids", [&](auto tag) {
    using I = typename decltype(tag)::type;
    plan_impl(static_cast<const I*>(ids.data), p, weights, static_cast<int64_t*>(counts.data),
              static_cast<int64_t*>(offsets.data), static_cast<int32_t*>(row_of.data),
              static_cast<int32_t*>(src_of.data), static_cast<int32_t*>(block_expert.data));
  });
}

void moe_permute(const Array& x, const Array& src_of, const Array& weights, const MoveParams& p, const Array& out,
                 Stream) {
  check_move_args(p, x, p.tokens, src_of, weights, out, p.rows);
  check(src_of.size == p.rows, "plan.src_of: expected rows elements");
  dispatch_move(x.dtype, p.weighted, weights.dtype, [&](auto xt, auto wt) {
    using X = typename decltype(xt)::type;
    using W = typename decltype(wt)::type;
    const W* w = p.weighted ? static_cast<const W*>(weights.data) : nullptr;
    std::vector<char> bad(size_t(std::max<int64_t>(1, (p.rows + rows_grain(p.hidden) - 1) / rows_grain(p.hidden))), 0);
    const int64_t grain = rows_grain(p.hidden);
    parallel_for(p.rows, grain, [&](int64_t r0, int64_t r1) {
      permute_best<X, W>(static_cast<const X*>(x.data), static_cast<const int32_t*>(src_of.data), w, p,
                         static_cast<X*>(out.data), r0, r1, &bad[size_t(r0 / grain)]);
    });
    for (char b : bad) check(!b, "plan.src_of: expected pair indices in [0, T*k] (T*k marks padding)");
  });
}

void moe_combine(const Array& y, const Array& row_of, const Array& weights, const MoveParams& p, const Array& out,
                 Stream) {
  check_move_args(p, y, p.rows, row_of, weights, out, p.tokens);
  check(row_of.size == p.tokens * p.k, "plan.row_of: expected T * k elements");
  dispatch_move(y.dtype, p.weighted, weights.dtype, [&](auto xt, auto wt) {
    using X = typename decltype(xt)::type;
    using W = typename decltype(wt)::type;
    const W* w = p.weighted ? static_cast<const W*>(weights.data) : nullptr;
    const int64_t grain = std::max<int64_t>(1, rows_grain(p.hidden) / p.k);
    std::vector<char> bad(size_t(std::max<int64_t>(1, (p.tokens + grain - 1) / grain)), 0);
    parallel_for(p.tokens, grain, [&](int64_t t0, int64_t t1) {
      combine_best<X, W>(static_cast<const X*>(y.data), static_cast<const int32_t*>(row_of.data), w, p,
                         static_cast<X*>(out.data), t0, t1, &bad[size_t(t0 / grain)]);
    });
    for (char b : bad) check(!b, "plan.row_of: expected rows in [-1, rows)");
  });
}

void moe_pair_dots(const Array& a, const Array& b, const Array& row_of, const MoveParams& p, const Array& out,
                   Stream) {
  check(a.size == p.tokens * p.hidden && b.size == p.rows * p.hidden, "a, b: sizes do not match the plan");
  if (a.dtype != b.dtype) throw TypeError("b: expected a's dtype");
  check(row_of.size == p.tokens * p.k && out.size == p.tokens * p.k, "row_of, out: expected T * k elements");
  row_of.as<int32_t>("row_of");
  dispatch_float(a.dtype, "a", [&](auto xt) {
    dispatch_weight(out.dtype, "out", [&](auto wt) {
      using X = typename decltype(xt)::type;
      using W = typename decltype(wt)::type;
      const int64_t grain = std::max<int64_t>(1, rows_grain(p.hidden) / p.k);
      std::vector<char> bad(size_t(std::max<int64_t>(1, (p.tokens + grain - 1) / grain)), 0);
      parallel_for(p.tokens, grain, [&](int64_t t0, int64_t t1) {
        dots_best<X, W>(static_cast<const X*>(a.data), static_cast<const X*>(b.data),
                        static_cast<const int32_t*>(row_of.data), p, static_cast<W*>(out.data), t0, t1,
                        &bad[size_t(t0 / grain)]);
      });
      for (char bb : bad) check(!bb, "plan.row_of: expected rows in [-1, rows)");
    });
  });
}

void moe_combine_backward(const Array& y, const Array& grad, const Array& row_of, const Array& src_of,
                          const Array& weights, const MoveParams& p, const Array& grad_y, const Array& grad_w,
                          Stream stream) {
  check(p.tokens >= 0 && p.k >= 1 && p.rows >= 0 && p.hidden >= 0, "plan: bad sizes");
  check(y.size == p.rows * p.hidden, "y: size does not match the plan");
  check(grad.size == p.tokens * p.hidden, "grad: expected [T, h] elements");
  if (grad.dtype != y.dtype) throw TypeError("grad: expected y's dtype");
  check(grad_y.size == y.size, "grad_y: expected y's size");
  if (grad_y.dtype != y.dtype) throw TypeError("grad_y: expected y's dtype");
  check(row_of.size == p.tokens * p.k, "plan.row_of: expected T * k elements");
  row_of.as<int32_t>("plan.row_of");
  check(src_of.size == p.rows, "plan.src_of: expected rows elements");
  src_of.as<int32_t>("plan.src_of");
  check(weights.size == p.tokens * p.k, "weights: expected [T, k] elements");
  check(grad_w.size == weights.size, "grad_w: expected weights' size");
  if (grad_w.dtype != weights.dtype) throw TypeError("grad_w: expected weights' dtype");
  bool fused_ok = true;
  dispatch_move(y.dtype, true, weights.dtype, [&](auto xt, auto wt) {
    using X = typename decltype(xt)::type;
    using W = typename decltype(wt)::type;
    const auto* ro = static_cast<const int32_t*>(row_of.data);
    const auto* so = static_cast<const int32_t*>(src_of.data);
    X* gy = static_cast<X*>(grad_y.data);
    const int64_t grain = std::max<int64_t>(1, rows_grain(p.hidden) / p.k);
    std::vector<char> bad(size_t(std::max<int64_t>(1, (p.tokens + grain - 1) / grain)), 0);
    parallel_for(p.tokens, grain, [&](int64_t t0, int64_t t1) {
      combine_backward_best<X, W>(static_cast<const X*>(y.data), static_cast<const X*>(grad.data), ro, so,
                                  static_cast<const W*>(weights.data), p, gy, static_cast<W*>(grad_w.data), t0, t1,
                                  &bad[size_t(t0 / grain)]);
    });
    const int64_t rgrain = std::max<int64_t>(rows_grain(p.hidden), 4096);  // mostly a scan of src_of
    std::vector<char> rbad(size_t(std::max<int64_t>(1, (p.rows + rgrain - 1) / rgrain)), 0);
    parallel_for(p.rows, rgrain, [&](int64_t r0, int64_t r1) {
      zero_padding_rows<X>(so, ro, p, gy, r0, r1, &rbad[size_t(r0 / rgrain)]);
    });
    for (char b : bad) fused_ok = fused_ok && !b;
    for (char b : rbad) fused_ok = fused_ok && !b;
  });
  if (fused_ok) return;
  // A plan out of range, or whose row_of and src_of disagree (not one that plan() made): the two passes,
  // grad_y from src_of and grad_w from row_of, as the separate permute and pair_dots calls would do.
  moe_combine_backward_two_passes(y, grad, row_of, src_of, weights, p, grad_y, grad_w, stream);
}

}  // namespace ck::CK_BACKEND
