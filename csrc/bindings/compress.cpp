// Bindings of commkernels.compress (csrc/compress/api.h).
#include "../compress/api.h"
#include "ndarray.h"

namespace {

using namespace ck::bindings;
namespace backend = ck::CK_BACKEND;

CK_BINDINGS(bind_compress) {
  m.def(
      "topk",
      [](const In& x, int64_t k, const Out& values, const Out& indices, uintptr_t stream) {
        backend::topk(as_array(x, "x"), k, as_array(values, "values"), as_array(indices, "indices"),
                      stream_of(stream, x));
      },
      nb::arg("x").noconvert(), nb::arg("k"), nb::arg("values").noconvert(), nb::arg("indices").noconvert(),
      nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "ef_topk",
      [](const In& grad, const Out& residual, int64_t k, const Out& values, const Out& indices, uintptr_t stream) {
        backend::ef_topk(as_array(grad, "grad"), as_array(residual, "residual"), k, as_array(values, "values"),
                         as_array(indices, "indices"), stream_of(stream, grad));
      },
      nb::arg("grad").noconvert(), nb::arg("residual").noconvert(), nb::arg("k"), nb::arg("values").noconvert(),
      nb::arg("indices").noconvert(), nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "randk_indices",
      [](int64_t size, int64_t k, uint64_t seed, uint64_t step, const Out& indices, uintptr_t stream) {
        backend::randk_indices(size, k, seed, step, as_array(indices, "indices"), stream_of(stream, indices));
      },
      nb::arg("size"), nb::arg("k"), nb::arg("seed"), nb::arg("step"), nb::arg("indices").noconvert(),
      nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "randk",
      [](const In& x, int64_t k, uint64_t seed, uint64_t step, bool unbiased, const Out& values, const Out& indices,
         uintptr_t stream) {
        backend::randk(as_array(x, "x"), k, seed, step, unbiased, as_array(values, "values"),
                       as_array(indices, "indices"), stream_of(stream, x));
      },
      nb::arg("x").noconvert(), nb::arg("k"), nb::arg("seed"), nb::arg("step"), nb::arg("unbiased"),
      nb::arg("values").noconvert(), nb::arg("indices").noconvert(), nb::arg("stream") = 0,
      nb::call_guard<nb::gil_scoped_release>());
}

}  // namespace
