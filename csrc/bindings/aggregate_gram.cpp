// Bindings of the Gram route of commkernels.aggregate (csrc/aggregate/gram.h). X arrives as (parts, n)
// (aggregate_rows.h). G and W are small float64 matrices in host memory in both modules: the host code
// between the two passes works on them, so the CUDA gram copies G back (and waits for it).
#include "../aggregate/gram.h"
#include "../aggregate/nearest.h"
#include "aggregate_rows.h"
#include "ndarray.h"

namespace {

using namespace ck::bindings;
namespace backend = ck::CK_BACKEND;

using HostIn = nb::ndarray<nb::ro, nb::c_contig, nb::device::cpu>;
using HostOut = nb::ndarray<nb::c_contig, nb::device::cpu>;

CK_BINDINGS(bind_aggregate_gram) {
  m.def(
      "aggregate_gram",
      [](const std::vector<In>& parts, int64_t n, int64_t center_mode, const In& center, const HostOut& G,
         uintptr_t stream) {
        const ck::Rows rows = rows_from(parts, n);
        backend::gram(rows, ck::gram_center(center_mode), as_array(center, "center"), as_array(G, "G"),
                      stream_of(stream, center));
      },
      nb::arg("parts").noconvert(), nb::arg("n"), nb::arg("center_mode"), nb::arg("center").noconvert(),
      nb::arg("G").noconvert(), nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "aggregate_combine",
      [](const std::vector<In>& parts, int64_t n, const HostIn& W, int64_t r, const Out& out, uintptr_t stream) {
        const ck::Rows rows = rows_from(parts, n);
        backend::combine(rows, as_array(W, "W"), r, as_array(out, "out"), stream_of(stream, out));
      },
      nb::arg("parts").noconvert(), nb::arg("n"), nb::arg("W").noconvert(), nb::arg("r"), nb::arg("out").noconvert(),
      nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "aggregate_nearest_median_mean",
      [](const std::vector<In>& parts, int64_t n, int64_t beta, const Out& out, uintptr_t stream) {
        const ck::Rows rows = rows_from(parts, n);
        backend::nearest_median_mean(rows, beta, as_array(out, "out"), stream_of(stream, out));
      },
      nb::arg("parts").noconvert(), nb::arg("n"), nb::arg("beta"), nb::arg("out").noconvert(),
      nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());
}

}  // namespace
