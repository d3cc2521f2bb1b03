// Bindings of the wire format (csrc/compress/wire_api.h, CPU module only), sparse aggregation and
// threshold selection (both modules).
#include <nanobind/stl/vector.h>

#include <vector>

#include "../compress/aggregate_sparse.h"
#include "../compress/threshold.h"
#include "../compress/wire_api.h"
#include "ndarray.h"

namespace {

using namespace ck::bindings;
namespace backend = ck::CK_BACKEND;

// The codecs exist on the host only. A template, so that the CUDA module never instantiates (and never
// links against) the calls in the discarded branch.
template <bool cuda = kIsCuda>
void bind_codecs(nb::module_& m) {
  if constexpr (!cuda) {
    m.def(
        "delta_varint_nbytes",
        [](const In& indices, int64_t size) { return backend::delta_varint_nbytes(as_array(indices, "indices"), size); },
        nb::arg("indices").noconvert(), nb::arg("size"), nb::call_guard<nb::gil_scoped_release>());
    m.def(
        "encode_sparse",
        [](const In& values, const In& indices, int64_t size, int codec, const Out& payload) {
          backend::encode_sparse(as_array(values, "values"), as_array(indices, "indices"), size, codec,
                                 as_array(payload, "out"));
        },
        nb::arg("values").noconvert(), nb::arg("indices").noconvert(), nb::arg("size"), nb::arg("codec"),
        nb::arg("payload").noconvert(), nb::call_guard<nb::gil_scoped_release>());
    m.def(
        "decode_sparse",
        [](const In& payload, int64_t size, int codec, const Out& values, const Out& indices) {
          backend::decode_sparse(as_array(payload, "buf"), size, codec, as_array(values, "values"),
                                 as_array(indices, "indices"));
        },
        nb::arg("payload").noconvert(), nb::arg("size"), nb::arg("codec"), nb::arg("values").noconvert(),
        nb::arg("indices").noconvert(), nb::call_guard<nb::gil_scoped_release>());
  }
}

template <class A>
std::vector<ck::Array> as_arrays(const std::vector<A>& arrays, const char* name) {
  std::vector<ck::Array> out;
  out.reserve(arrays.size());
  for (const A& a : arrays) out.push_back(as_array(a, name));
  return out;
}

CK_BINDINGS(bind_compress_wire) {
  bind_codecs(m);

  m.def(
      "sparse_aggregate",
      [](const std::vector<In>& values, const std::vector<In>& indices, int64_t size, bool average, const Out& out,
         uintptr_t stream) {
        backend::sparse_aggregate(as_arrays(values, "values"), as_arrays(indices, "indices"), size, average,
                                  as_array(out, "out"), stream_of(stream, out));
      },
      nb::arg("values").noconvert(), nb::arg("indices").noconvert(), nb::arg("size"), nb::arg("average"),
      nb::arg("out").noconvert(), nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "threshold_count",
      [](const In& x, double v, const Out& counts, uintptr_t stream) {
        backend::threshold_count(as_array(x, "x"), v, as_array(counts, "counts"), stream_of(stream, x));
      },
      nb::arg("x").noconvert(), nb::arg("v"), nb::arg("counts").noconvert(), nb::arg("stream") = 0,
      nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "threshold_write",
      [](const In& x, double v, const In& counts, const Out& values, const Out& indices, uintptr_t stream) {
        backend::threshold_write(as_array(x, "x"), v, as_array(counts, "counts"), as_array(values, "values"),
                                 as_array(indices, "indices"), stream_of(stream, x));
      },
      nb::arg("x").noconvert(), nb::arg("v"), nb::arg("counts").noconvert(), nb::arg("values").noconvert(),
      nb::arg("indices").noconvert(), nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());
}

}  // namespace
