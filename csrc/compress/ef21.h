// Host+device math of EF21 top-k (Richtarik, Sokolov, Fatkhullin 2021; MASHA2's worker step):
//   d = grad - state;  c = topk(d, k);  state <- state + c.
// d is formed in acc_t (float32, float64 for float64) and rounded once to the state's dtype S, exactly as
// ef_topk rounds its p; the message values are d's entries in S, and each sent entry of the state becomes
// from_acc<S>(state + c) (for float32/float64, state + (grad - state), which may differ from grad by the
// rounding of d).
#pragma once

#include <string>

#include "../common/array.h"
#include "../common/half.h"
#include "../common/stream.h"
#include "args.h"

namespace ck {

template <class G, class S>
CK_HD S ef21_difference(G grad, S state) {
  return from_acc<S>(acc_t<S>(to_acc(grad)) - acc_t<S>(to_acc(state)));
}

template <class S>
CK_HD S ef21_update(S state, S sent) {
  return from_acc<S>(acc_t<S>(to_acc(state)) + acc_t<S>(to_acc(sent)));
}

// Checks ef21_topk's arguments and calls f(grad, state, scratch, values, indices) with typed pointers.
// state has grad's dtype, or float32 for a 16-bit grad; scratch (d) and values have the state's dtype.
template <class F>
void with_ef21_args(const Array& grad, const Array& state, const Array& scratch, int64_t k, const Array& values,
                    const Array& indices, F&& f) {
  check_size_fits_int32(grad.size, "grad");
  check(state.size == grad.size, "state: expected " + std::to_string(grad.size) + " elements like grad, got " +
                                     std::to_string(state.size));
  check(scratch.size == grad.size, "scratch: expected " + std::to_string(grad.size) +
                                       " elements like grad, got " + std::to_string(scratch.size));
  check_k(grad.size, k);
  dispatch_float(grad.dtype, "grad", [&](auto gtag) {
    using G = typename decltype(gtag)::type;
    auto run = [&](auto stag) {
      using S = typename decltype(stag)::type;
      check_sparse_outputs<S>(k, values, indices);
      f(static_cast<const G*>(grad.data), static_cast<S*>(state.data), scratch.as<S>("scratch"),
        values.as<S>("values"), indices.as<int32_t>("indices"));
    };
    if (state.dtype == grad.dtype) return run(gtag);
    if constexpr (sizeof(G) == 2) {
      if (state.dtype == DType::float32) return run(TypeTag<float>{});
    }
    throw TypeError(std::string("state: expected float32 or the grad's dtype (") + dtype_name(grad.dtype) +
                    "), got " + dtype_name(state.dtype));
  });
}

}  // namespace ck

namespace ck::CK_BACKEND {

// The entry point (declared here rather than in api.h, which belongs to the foundation):
// scratch <- d = grad - state; (values, indices) <- topk(d, k); state[indices] += values.
void ef21_topk(const Array& grad, const Array& state, const Array& scratch, int64_t k, const Array& values,
               const Array& indices, Stream stream);

}  // namespace ck::CK_BACKEND
