// Bindings of the asynchronous averaging kernels and the honest-set column moments (csrc/aggregate/async.h).
#include <nanobind/stl/vector.h>

#include <vector>

#include "../aggregate/async.h"
#include "aggregate_rows.h"

namespace {

using namespace ck::bindings;
namespace backend = ck::CK_BACKEND;

CK_BINDINGS(bind_aggregate_async) {
  m.def(
      "buffer_add",
      [](const Out& buffer, const In& update, double weight, uintptr_t stream) {
        backend::buffer_add(as_array(buffer, "buffer"), as_array(update, "update"), weight, stream_of(stream, buffer));
      },
      nb::arg("buffer").noconvert(), nb::arg("update").noconvert(), nb::arg("weight"), nb::arg("stream") = 0,
      nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "fedasync_mix",
      [](const Out& x, const In& x_new, double alpha, uintptr_t stream) {
        backend::fedasync_mix(as_array(x, "x"), as_array(x_new, "x_new"), alpha, stream_of(stream, x));
      },
      nb::arg("x").noconvert(), nb::arg("x_new").noconvert(), nb::arg("alpha"), nb::arg("stream") = 0,
      nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "variance_corrected_mean",
      [](const std::vector<In>& parts, int64_t n, const std::vector<int64_t>& lengths, const std::vector<double>& weights,
         double eps, const Out& out, uintptr_t stream) {
        backend::variance_corrected_mean(rows_from(parts, n), lengths, weights, eps, as_array(out, "out"),
                                         stream_of(stream, out));
      },
      nb::arg("parts").noconvert(), nb::arg("n"), nb::arg("lengths"), nb::arg("weights"), nb::arg("eps"), nb::arg("out").noconvert(),
      nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "column_moments",
      [](const std::vector<In>& parts, int64_t n, const In& center, const Out& mean_out, const Out& std_out, const Out& totals,
         uintptr_t stream) {
        backend::column_moments(rows_from(parts, n), as_array(center, "F"), as_array(mean_out, "mean"),
                                as_array(std_out, "std"), as_array(totals, "totals"), stream_of(stream, totals));
      },
      nb::arg("parts").noconvert(), nb::arg("n"), nb::arg("center").noconvert(), nb::arg("mean_out").noconvert(),
      nb::arg("std_out").noconvert(), nb::arg("totals").noconvert(), nb::arg("stream") = 0,
      nb::call_guard<nb::gil_scoped_release>());
}

}  // namespace
