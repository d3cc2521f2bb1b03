// Bindings of commkernels.aggregate's mean (csrc/aggregate/mean.h). X is passed as (parts, n): see
// aggregate_rows.h and csrc/aggregate/rows.h.
#include <nanobind/stl/vector.h>

#include "../aggregate/mean.h"
#include "aggregate_rows.h"

namespace {

using namespace ck::bindings;
namespace backend = ck::CK_BACKEND;

CK_BINDINGS(bind_aggregate) {
  m.def(
      "aggregate_mean",
      [](const std::vector<In>& parts, int64_t n, const std::vector<double>& weights, const Out& out, uintptr_t stream) {
        backend::mean(rows_from(parts, n), weights, as_array(out, "out"), stream_of(stream, out));
      },
      nb::arg("parts").noconvert(), nb::arg("n"), nb::arg("weights"), nb::arg("out").noconvert(),
      nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());
}

}  // namespace
