// EF21 top-k on the CPU, in two steps: one fused pass writes d = grad - state into the caller's scratch
// buffer (reused step after step, so no page faults), then the library's top-k selects from d, and the k
// sent entries of the state are updated.
//
// Why not one pass: the top-k machinery (sample threshold, candidate filtering, radix select) lives in
// an anonymous namespace of topk_cpu.cpp. Moving it into a header (csrc/compress/topk_select_cpu.h) would
// let this launch pass a key functor that computes d on the fly, as ef_topk does, and drop the scratch
// write (about 4 of the 16 bytes per fp32 element).
#include "../common/parallel.h"
#include "api.h"
#include "ef21.h"

namespace ck::CK_BACKEND {

void ef21_topk(const Array& grad, const Array& state, const Array& scratch, int64_t k, const Array& values,
               const Array& indices, Stream stream) {
  with_ef21_args(grad, state, scratch, k, values, indices,
                 [&](const auto* g, auto* s, auto* d, auto* vals, int32_t* idx) {
    const int64_t n = grad.size;
    parallel_for(n, 1 << 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) d[i] = ef21_difference(g[i], s[i]);
    });
    topk(scratch, k, values, indices, stream);
    parallel_for(k, 1 << 14, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) s[idx[j]] = ef21_update(s[idx[j]], vals[j]);
    });
  });
}

}  // namespace ck::CK_BACKEND
