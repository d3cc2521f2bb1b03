// Bindings of the gossip mixing kernels (csrc/graph/mix.h).
#include "../graph/mix.h"
#include "ndarray.h"

namespace {

using namespace ck::bindings;
namespace backend = ck::CK_BACKEND;

CK_BINDINGS(bind_graph_mix) {
  m.def(
      "mix_dense",
      [](const In& x, const In& w, int64_t n, int64_t d, int64_t rounds, const Out& y, uintptr_t stream) {
        backend::mix_dense(as_array(x, "x"), as_array(w, "W"), n, d, rounds, as_array(y, "y"), stream_of(stream, x));
      },
      nb::arg("x").noconvert(), nb::arg("w").noconvert(), nb::arg("n"), nb::arg("d"), nb::arg("rounds"),
      nb::arg("y").noconvert(), nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());
  m.def(
      "mix_csr",
      [](const In& x, const In& indptr, const In& indices, const In& weight, int64_t n, int64_t d, int64_t rounds,
         const Out& y, uintptr_t stream) {
        backend::mix_csr(as_array(x, "x"), as_array(indptr, "indptr"), as_array(indices, "indices"),
                         as_array(weight, "edge_weight"), n, d, rounds, as_array(y, "y"), stream_of(stream, x));
      },
      nb::arg("x").noconvert(), nb::arg("indptr").noconvert(), nb::arg("indices").noconvert(),
      nb::arg("weight").noconvert(), nb::arg("n"), nb::arg("d"), nb::arg("rounds"), nb::arg("y").noconvert(),
      nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());
  m.def(
      "consensus_distance",
      [](const In& x, int64_t n, int64_t d, const Out& out, uintptr_t stream) {
        backend::consensus_distance(as_array(x, "x"), n, d, as_array(out, "out"), stream_of(stream, x));
      },
      nb::arg("x").noconvert(), nb::arg("n"), nb::arg("d"), nb::arg("out").noconvert(), nb::arg("stream") = 0,
      nb::call_guard<nb::gil_scoped_release>());
}

}  // namespace
