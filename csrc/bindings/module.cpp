// The module, built twice: commkernels._cpu (CK_BACKEND=cpu) and commkernels._cuda (CK_BACKEND=cuda).
// Each family's binding file (csrc/bindings/<family>.cpp) adds its functions through CK_BINDINGS; this
// file defines the module, the functions every backend has, and the exception translation.
#include <nanobind/stl/array.h>
#include <nanobind/stl/string.h>

#include "../bench/api.h"
#include "../common/backend_info.h"
#include "../common/parallel.h"
#include "../common/philox.h"
#include "ndarray.h"

using namespace ck::bindings;

NB_MODULE(CK_MODULE_NAME, m) {
  m.doc() = "commkernels compiled kernels (" CK_STR(CK_BACKEND) " backend)";
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const ck::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    }
  });

  m.def(
      "build_info",
      [] {
        const ck::CK_BACKEND::BackendInfo i = ck::CK_BACKEND::backend_info();
        nb::dict d;
        d["backend"] = i.backend, d["compiler"] = i.compiler, d["build_type"] = i.build_type, d["flags"] = i.flags;
        d["sanitized"] = i.sanitized;
        if (!kIsCuda) d["openmp"] = i.openmp, d["num_threads"] = i.num_threads, d["simd"] = i.simd;
        if (kIsCuda) d["cuda_archs"] = i.cuda_archs, d["device_count"] = i.device_count, d["device_error"] = i.device_error;
        return d;
      },
      "Compiled features of this backend.");
  m.def("set_num_threads", &ck::set_num_threads, nb::arg("n"));
  m.def("get_num_threads", &ck::max_threads);

  m.def(
      "stream_triad",
      [](const Out& a, const In& b, const In& c, float scalar, uintptr_t stream) {
        ck::CK_BACKEND::stream_triad(as_array(a, "a"), as_array(b, "b"), as_array(c, "c"), scalar,
                                     stream_of(stream, a));
      },
      nb::arg("a").noconvert(), nb::arg("b").noconvert(), nb::arg("c").noconvert(), nb::arg("scalar"),
      nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>(),
      "STREAM triad a = b + scalar * c (float32), the bench's memory-bandwidth probe.");

  if constexpr (!kIsCuda) {
    // Test hook: the raw Philox4x32-10 block function, checked against the published known-answer vectors.
    m.def("philox4x32_10", [](std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
      const ck::Philox4x32 r = ck::philox4x32_10(ck::Philox4x32{{ctr[0], ctr[1], ctr[2], ctr[3]}}, key[0], key[1]);
      return std::array<uint32_t, 4>{r.v[0], r.v[1], r.v[2], r.v[3]};
    });
  }

  for (Binder bind : registry()) bind(m);
}
