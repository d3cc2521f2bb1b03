// Bindings of the graph structure kernels (csrc/graph/csr.h).
#include <nanobind/stl/string.h>

#include "../graph/csr.h"
#include "../graph/topology.h"
#include "ndarray.h"

namespace {

using namespace ck::bindings;
namespace backend = ck::CK_BACKEND;

CK_BINDINGS(bind_graph_csr) {
  m.def(
      "csr_build",
      [](const In& keys, const In& values, int64_t num_nodes, const Out& indptr, const Out& sorted_values,
         const Out& eid, const std::string& keys_name, const std::string& values_name, uintptr_t stream) {
        backend::csr_build(as_array(keys, "keys"), as_array(values, "values"), num_nodes, as_array(indptr, "indptr"),
                           as_array(sorted_values, "sorted_values"), as_array(eid, "eid"), keys_name, values_name,
                           stream_of(stream, keys));
      },
      nb::arg("keys").noconvert(), nb::arg("values").noconvert(), nb::arg("num_nodes"), nb::arg("indptr").noconvert(),
      nb::arg("sorted_values").noconvert(), nb::arg("eid").noconvert(), nb::arg("keys_name"),
      nb::arg("values_name"), nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());

  if constexpr (!kIsCuda) {
    // A host-side generator (header-only, csrc/graph/topology.h): in the CPU module only.
    m.def(
        "barabasi_albert",
        [](int64_t n, int64_t m_, uint64_t seed, const Out& a, const Out& b) {
          const ck::Array aa = as_array(a, "a"), ba = as_array(b, "b");
          const int64_t edges = m_ + m_ * (n - m_ - 1);
          ck::check(aa.size == edges && ba.size == edges, "a, b: expected m + m (n - m - 1) entries");
          ck::graph::barabasi_albert(n, m_, seed, aa.as<int64_t>("a"), ba.as<int64_t>("b"));
        },
        nb::arg("n"), nb::arg("m"), nb::arg("seed"), nb::arg("a").noconvert(), nb::arg("b").noconvert(),
        nb::call_guard<nb::gil_scoped_release>());
  }
}

}  // namespace
