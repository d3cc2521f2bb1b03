// Bindings of EF21 top-k (csrc/compress/ef21.h) and the PowerSGD orthogonalisation (csrc/linalg/orthogonalize.h).
#include "../compress/ef21.h"
#include "../linalg/orthogonalize.h"
#include "ndarray.h"

namespace {

using namespace ck::bindings;
namespace backend = ck::CK_BACKEND;

CK_BINDINGS(bind_compress_ef) {
  m.def(
      "ef21_topk",
      [](const In& grad, const Out& state, const Out& scratch, int64_t k, const Out& values, const Out& indices,
         uintptr_t stream) {
        backend::ef21_topk(as_array(grad, "grad"), as_array(state, "state"), as_array(scratch, "scratch"), k,
                           as_array(values, "values"), as_array(indices, "indices"), stream_of(stream, grad));
      },
      nb::arg("grad").noconvert(), nb::arg("state").noconvert(), nb::arg("scratch").noconvert(), nb::arg("k"),
      nb::arg("values").noconvert(), nb::arg("indices").noconvert(), nb::arg("stream") = 0,
      nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "orthogonalize",
      [](const Out& p, int64_t batch, int64_t n, int64_t r, double eps, uintptr_t stream) {
        backend::orthogonalize(as_array(p, "P"), batch, n, r, eps, stream_of(stream, p));
      },
      nb::arg("P").noconvert(), nb::arg("batch"), nb::arg("n"), nb::arg("r"), nb::arg("eps"), nb::arg("stream") = 0,
      nb::call_guard<nb::gil_scoped_release>());
}

}  // namespace
