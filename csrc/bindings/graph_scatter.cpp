// Bindings of commkernels.graph's scatter / segment / gather (csrc/graph/scatter.h).
#include "../graph/scatter.h"
#include "ndarray.h"

namespace {

using namespace ck::bindings;
namespace backend = ck::CK_BACKEND;

CK_BINDINGS(bind_graph_scatter) {
  m.def(
      "graph_scatter",
      [](const In& src, int64_t e, int64_t f, const In& index, int64_t dim_size, int64_t reduce, const Out& out,
         const Out& arg, uintptr_t stream) {
        backend::scatter(as_array(src, "src"), e, f, as_array(index, "index"), dim_size, reduce,
                         as_array(out, "out"), as_array(arg, "arg"), stream_of(stream, src));
      },
      nb::arg("src").noconvert(), nb::arg("e"), nb::arg("f"), nb::arg("index").noconvert(), nb::arg("dim_size"),
      nb::arg("reduce"), nb::arg("out").noconvert(), nb::arg("arg").noconvert(), nb::arg("stream") = 0,
      nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "graph_segment",
      [](const In& src, int64_t e, int64_t f, const In& indptr, int64_t reduce, const Out& out, const Out& arg,
         uintptr_t stream) {
        backend::segment(as_array(src, "src"), e, f, as_array(indptr, "indptr"), reduce, as_array(out, "out"),
                         as_array(arg, "arg"), stream_of(stream, src));
      },
      nb::arg("src").noconvert(), nb::arg("e"), nb::arg("f"), nb::arg("indptr").noconvert(), nb::arg("reduce"),
      nb::arg("out").noconvert(), nb::arg("arg").noconvert(), nb::arg("stream") = 0,
      nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "graph_gather",
      [](const In& x, int64_t n, int64_t f, const In& index, const Out& out, uintptr_t stream) {
        backend::gather(as_array(x, "x"), n, f, as_array(index, "index"), as_array(out, "out"),
                        stream_of(stream, x));
      },
      nb::arg("x").noconvert(), nb::arg("n"), nb::arg("f"), nb::arg("index").noconvert(),
      nb::arg("out").noconvert(), nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());
}

}  // namespace
