// Bindings of commkernels.graph's spmm, sddmm, edge_softmax and fused attention (csrc/graph/spmm.h,
// attention.h).
#include "../graph/attention.h"
#include "../graph/spmm.h"
#include "ndarray.h"

namespace {

using namespace ck::bindings;
namespace backend = ck::CK_BACKEND;

#define CK_A(name) as_array(name, #name)

CK_BINDINGS(bind_graph_spmm) {
  m.def(
      "graph_spmm",
      [](const In& x, int64_t heads, int64_t d, const In& indptr, const In& indices, const In& eid, const In& weight,
         bool weight_in_slots, int64_t reduce, const Out& out, const Out& arg, uintptr_t stream) {
        backend::spmm(CK_A(x), heads, d, CK_A(indptr), CK_A(indices), CK_A(eid), CK_A(weight), weight_in_slots, reduce,
                      CK_A(out), CK_A(arg), stream_of(stream, x));
      },
      nb::arg("x").noconvert(), nb::arg("heads"), nb::arg("d"), nb::arg("indptr").noconvert(),
      nb::arg("indices").noconvert(), nb::arg("eid").noconvert(), nb::arg("weight").noconvert(),
      nb::arg("weight_in_slots"), nb::arg("reduce"),
      nb::arg("out").noconvert(), nb::arg("arg").noconvert(), nb::arg("stream") = 0,
      nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "graph_sddmm",
      [](const In& a, const In& b, int64_t heads, int64_t d, const In& indptr, const In& indices, const In& eid,
         const Out& out, uintptr_t stream) {
        backend::sddmm(CK_A(a), CK_A(b), heads, d, CK_A(indptr), CK_A(indices), CK_A(eid), CK_A(out),
                       stream_of(stream, a));
      },
      nb::arg("a").noconvert(), nb::arg("b").noconvert(), nb::arg("heads"), nb::arg("d"),
      nb::arg("indptr").noconvert(), nb::arg("indices").noconvert(), nb::arg("eid").noconvert(),
      nb::arg("out").noconvert(), nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "graph_edge_softmax",
      [](const In& scores, int64_t heads, const In& indptr, const In& eid, const In& dst, const Out& out,
         uintptr_t stream) {
        backend::edge_softmax(CK_A(scores), heads, CK_A(indptr), CK_A(eid), CK_A(dst), CK_A(out),
                              stream_of(stream, scores));
      },
      nb::arg("scores").noconvert(), nb::arg("heads"), nb::arg("indptr").noconvert(), nb::arg("eid").noconvert(),
      nb::arg("dst").noconvert(), nb::arg("out").noconvert(), nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "graph_edge_softmax_backward",
      [](const In& y, const In& grad, int64_t heads, const In& indptr, const In& eid, const In& dst,
         const Out& grad_scores, uintptr_t stream) {
        backend::edge_softmax_backward(CK_A(y), CK_A(grad), heads, CK_A(indptr), CK_A(eid), CK_A(dst),
                                       CK_A(grad_scores), stream_of(stream, y));
      },
      nb::arg("y").noconvert(), nb::arg("grad").noconvert(), nb::arg("heads"), nb::arg("indptr").noconvert(),
      nb::arg("eid").noconvert(), nb::arg("dst").noconvert(), nb::arg("grad_scores").noconvert(), nb::arg("stream") = 0,
      nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "graph_attention_forward",
      [](const In& q, const In& k, const In& v, const In& bias, int64_t heads, int64_t d, int64_t dv, double scale,
         const In& indptr, const In& indices, const In& eid, const Out& out, const Out& lse, uintptr_t stream) {
        backend::attention_forward(CK_A(q), CK_A(k), CK_A(v), CK_A(bias), heads, d, dv, scale, CK_A(indptr),
                                   CK_A(indices), CK_A(eid), CK_A(out), CK_A(lse), stream_of(stream, q));
      },
      nb::arg("q").noconvert(), nb::arg("k").noconvert(), nb::arg("v").noconvert(), nb::arg("bias").noconvert(),
      nb::arg("heads"), nb::arg("d"), nb::arg("dv"), nb::arg("scale"), nb::arg("indptr").noconvert(),
      nb::arg("indices").noconvert(), nb::arg("eid").noconvert(), nb::arg("out").noconvert(),
      nb::arg("lse").noconvert(), nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "graph_attention_backward_dst",
      [](const In& q, const In& k, const In& v, const In& bias, const In& out, const In& grad_out, const In& lse,
         int64_t heads, int64_t d, int64_t dv, double scale, const In& indptr, const In& indices, const In& eid,
         const Out& grad_q, const Out& grad_bias, const Out& delta, uintptr_t stream) {
        backend::attention_backward_dst(CK_A(q), CK_A(k), CK_A(v), CK_A(bias), CK_A(out), CK_A(grad_out), CK_A(lse),
                                        heads, d, dv, scale, CK_A(indptr), CK_A(indices), CK_A(eid), CK_A(grad_q),
                                        CK_A(grad_bias), CK_A(delta), stream_of(stream, q));
      },
      nb::arg("q").noconvert(), nb::arg("k").noconvert(), nb::arg("v").noconvert(), nb::arg("bias").noconvert(),
      nb::arg("out").noconvert(), nb::arg("grad_out").noconvert(), nb::arg("lse").noconvert(), nb::arg("heads"),
      nb::arg("d"), nb::arg("dv"), nb::arg("scale"), nb::arg("indptr").noconvert(), nb::arg("indices").noconvert(),
      nb::arg("eid").noconvert(), nb::arg("grad_q").noconvert(), nb::arg("grad_bias").noconvert(),
      nb::arg("delta").noconvert(), nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "graph_attention_backward_src",
      [](const In& q, const In& k, const In& v, const In& bias, const In& grad_out, const In& lse, const In& delta,
         int64_t heads, int64_t d, int64_t dv, double scale, const In& cindptr, const In& cindices, const In& ceid,
         const Out& grad_k, const Out& grad_v, uintptr_t stream) {
        backend::attention_backward_src(CK_A(q), CK_A(k), CK_A(v), CK_A(bias), CK_A(grad_out), CK_A(lse),
                                        CK_A(delta), heads, d, dv, scale, CK_A(cindptr), CK_A(cindices), CK_A(ceid),
                                        CK_A(grad_k), CK_A(grad_v), stream_of(stream, q));
      },
      nb::arg("q").noconvert(), nb::arg("k").noconvert(), nb::arg("v").noconvert(), nb::arg("bias").noconvert(),
      nb::arg("grad_out").noconvert(), nb::arg("lse").noconvert(), nb::arg("delta").noconvert(), nb::arg("heads"),
      nb::arg("d"), nb::arg("dv"), nb::arg("scale"), nb::arg("cindptr").noconvert(), nb::arg("cindices").noconvert(),
      nb::arg("ceid").noconvert(), nb::arg("grad_k").noconvert(), nb::arg("grad_v").noconvert(),
      nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());
}

}  // namespace
