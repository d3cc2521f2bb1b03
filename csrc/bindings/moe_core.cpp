// Bindings of commkernels.moe's routing and dispatch kernels (csrc/moe/route.h, csrc/moe/dispatch.h).
#include <nanobind/stl/optional.h>

#include "../moe/dispatch.h"
#include "../moe/route.h"
#include "ndarray.h"

namespace {

using namespace ck::bindings;
namespace backend = ck::CK_BACKEND;

ck::Array optional_array(const std::optional<In>& a, const char* name) {
  return a ? as_array(*a, name) : ck::Array{};
}

CK_BINDINGS(bind_moe_core) {
  m.def(
      "moe_route",
      [](const In& logits, int64_t tokens, int64_t experts, int64_t k, int score, bool post, bool renormalize,
         const std::optional<In>& bias, int64_t n_group, int64_t topk_group, double scale, const Out& weights,
         const Out& ids, uintptr_t stream) {
        ck::RouteParams p;
        p.tokens = tokens, p.experts = experts, p.k = k, p.score = ck::MoeScore(score), p.post = post;
        p.renormalize = renormalize, p.has_bias = bias.has_value(), p.n_group = n_group;
        p.topk_group = topk_group, p.scale = scale;
        backend::moe_route(as_array(logits, "logits"), p, optional_array(bias, "bias"), as_array(weights, "weights"),
                           as_array(ids, "ids"), stream_of(stream, logits));
      },
      nb::arg("logits").noconvert(), nb::arg("tokens"), nb::arg("experts"), nb::arg("k"), nb::arg("score"),
      nb::arg("post"), nb::arg("renormalize"), nb::arg("bias").noconvert().none(), nb::arg("n_group"),
      nb::arg("topk_group"), nb::arg("scale"), nb::arg("weights").noconvert(), nb::arg("ids").noconvert(),
      nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "moe_plan",
      [](const In& ids, int64_t tokens, int64_t k, int64_t experts, int64_t capacity, bool by_score, int64_t align,
         const std::optional<In>& weights, const Out& counts, const Out& offsets, const Out& row_of,
         const Out& src_of, const std::optional<Out>& block_expert, uintptr_t stream) {
        ck::PlanParams p;
        p.tokens = tokens, p.k = k, p.experts = experts, p.capacity = capacity, p.by_score = by_score;
        p.align = align;
        backend::moe_plan(as_array(ids, "ids"), p, optional_array(weights, "weights"), as_array(counts, "counts"),
                          as_array(offsets, "offsets"), as_array(row_of, "row_of"), as_array(src_of, "src_of"),
                          block_expert ? as_array(*block_expert, "block_expert") : ck::Array{},
                          stream_of(stream, counts));
      },
      nb::arg("ids").noconvert(), nb::arg("tokens"), nb::arg("k"), nb::arg("experts"), nb::arg("capacity"),
      nb::arg("by_score"), nb::arg("align"), nb::arg("weights").noconvert().none(), nb::arg("counts").noconvert(),
      nb::arg("offsets").noconvert(), nb::arg("row_of").noconvert(), nb::arg("src_of").noconvert(),
      nb::arg("block_expert").noconvert().none(), nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "moe_permute",
      [](const In& x, const In& src_of, const std::optional<In>& weights, int64_t tokens, int64_t k, int64_t rows,
         int64_t hidden, const Out& out, uintptr_t stream) {
        ck::MoveParams p{tokens, k, rows, hidden, weights.has_value()};
        backend::moe_permute(as_array(x, "x"), as_array(src_of, "src_of"), optional_array(weights, "weights"), p,
                             as_array(out, "out"), stream_of(stream, out));
      },
      nb::arg("x").noconvert(), nb::arg("src_of").noconvert(), nb::arg("weights").noconvert().none(),
      nb::arg("tokens"), nb::arg("k"), nb::arg("rows"), nb::arg("hidden"), nb::arg("out").noconvert(),
      nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "moe_combine",
      [](const In& y, const In& row_of, const std::optional<In>& weights, int64_t tokens, int64_t k, int64_t rows,
         int64_t hidden, const Out& out, uintptr_t stream) {
        ck::MoveParams p{tokens, k, rows, hidden, weights.has_value()};
        backend::moe_combine(as_array(y, "y"), as_array(row_of, "row_of"), optional_array(weights, "weights"), p,
                             as_array(out, "out"), stream_of(stream, out));
      },
      nb::arg("y").noconvert(), nb::arg("row_of").noconvert(), nb::arg("weights").noconvert().none(),
      nb::arg("tokens"), nb::arg("k"), nb::arg("rows"), nb::arg("hidden"), nb::arg("out").noconvert(),
      nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "moe_pair_dots",
      [](const In& a, const In& b, const In& row_of, int64_t tokens, int64_t k, int64_t rows, int64_t hidden,
         const Out& out, uintptr_t stream) {
        ck::MoveParams p{tokens, k, rows, hidden, false};
        backend::moe_pair_dots(as_array(a, "a"), as_array(b, "b"), as_array(row_of, "row_of"), p,
                               as_array(out, "out"), stream_of(stream, out));
      },
      nb::arg("a").noconvert(), nb::arg("b").noconvert(), nb::arg("row_of").noconvert(), nb::arg("tokens"),
      nb::arg("k"), nb::arg("rows"), nb::arg("hidden"), nb::arg("out").noconvert(), nb::arg("stream") = 0,
      nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "moe_combine_backward",
      [](const In& y, const In& grad, const In& row_of, const In& src_of, const In& weights, int64_t tokens, int64_t k,
         int64_t rows, int64_t hidden, const Out& grad_y, const Out& grad_w, uintptr_t stream) {
        ck::MoveParams p{tokens, k, rows, hidden, true};
        backend::moe_combine_backward(as_array(y, "y"), as_array(grad, "grad"), as_array(row_of, "row_of"),
                                      as_array(src_of, "src_of"), as_array(weights, "weights"), p,
                                      as_array(grad_y, "grad_y"), as_array(grad_w, "grad_w"),
                                      stream_of(stream, grad_y));
      },
      nb::arg("y").noconvert(), nb::arg("grad").noconvert(), nb::arg("row_of").noconvert(),
      nb::arg("src_of").noconvert(), nb::arg("weights").noconvert(), nb::arg("tokens"), nb::arg("k"),
      nb::arg("rows"), nb::arg("hidden"), nb::arg("grad_y").noconvert(), nb::arg("grad_w").noconvert(),
      nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());
}

}  // namespace
