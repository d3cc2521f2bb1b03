// nanobind glue, built twice: into commkernels._cpu (CK_BACKEND=cpu) and commkernels._cuda (CK_BACKEND=cuda).
// Glue only: each nb::ndarray becomes a ck::Array and the kernel entry point of this backend is called.
// Every array argument is .noconvert(): nanobind must never make a silent copy (a copied output would
// lose the kernel's writes).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/array.h>
#include <nanobind/stl/string.h>

#include "../common/parallel.h"
#include "../common/philox.h"
#include "../bench/api.h"
#include "../compress/api.h"
#include "../common/backend_info.h"

namespace nb = nanobind;

namespace {

#define CK_STR2(x) #x
#define CK_STR(x) CK_STR2(x)
constexpr bool kIsCuda = std::string_view(CK_STR(CK_BACKEND)) == "cuda";

using Device = std::conditional_t<kIsCuda, nb::device::cuda, nb::device::cpu>;
// Inputs may be read-only (nb::ro); outputs and in-place arguments must be writable.
using In = nb::ndarray<nb::ro, nb::c_contig, Device>;
using Out = nb::ndarray<nb::c_contig, Device>;

ck::DType dtype_from_dlpack(nb::dlpack::dtype t, const char* name) {
  using code = nb::dlpack::dtype_code;
  if (t.lanes == 1) {
    if (t.code == uint8_t(code::Float) && t.bits == 32) return ck::DType::float32;
    if (t.code == uint8_t(code::Float) && t.bits == 64) return ck::DType::float64;
    if (t.code == uint8_t(code::Float) && t.bits == 16) return ck::DType::float16;
    if (t.code == uint8_t(code::Bfloat) && t.bits == 16) return ck::DType::bfloat16;
    if (t.code == uint8_t(code::Int) && t.bits == 32) return ck::DType::int32;
    if (t.code == uint8_t(code::Int) && t.bits == 64) return ck::DType::int64;
    if (t.code == uint8_t(code::UInt) && t.bits == 8) return ck::DType::uint8;
  }
  throw ck::TypeError(std::string(name) + ": unsupported dtype");
}

template <class A>
ck::Array as_array(const A& a, const char* name) {
  int64_t size = 1;
  for (size_t d = 0; d < a.ndim(); ++d) size *= int64_t(a.shape(d));
  return ck::Array{const_cast<void*>(static_cast<const void*>(a.data())), size, dtype_from_dlpack(a.dtype(), name)};
}

// The stream argument (an integer cudaStream_t) and the device that the arrays live on.
template <class A>
ck::Stream stream_of(uintptr_t stream, const A& a) { return ck::Stream{stream, int(a.device_id())}; }

}  // namespace

NB_MODULE(CK_MODULE_NAME, m) {
  m.doc() = "commkernels compiled kernels (" CK_STR(CK_BACKEND) " backend)";
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const ck::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    }
  });

  m.def("build_info", [] {
    const ck::CK_BACKEND::BackendInfo i = ck::CK_BACKEND::backend_info();
    nb::dict d;
    d["backend"] = i.backend, d["compiler"] = i.compiler, d["build_type"] = i.build_type, d["flags"] = i.flags;
    d["sanitized"] = i.sanitized;
    if (!kIsCuda) d["openmp"] = i.openmp, d["num_threads"] = i.num_threads, d["simd"] = i.simd;
    if (kIsCuda) d["cuda_archs"] = i.cuda_archs, d["device_count"] = i.device_count, d["device_error"] = i.device_error;
    return d;
  }, "Compiled features of this backend.");
  m.def("set_num_threads", &ck::set_num_threads, nb::arg("n"));
  m.def("get_num_threads", &ck::max_threads);

  m.def(
      "topk",
      [](const In& x, int64_t k, const Out& values, const Out& indices, uintptr_t stream) {
        ck::CK_BACKEND::topk(as_array(x, "x"), k, as_array(values, "values"), as_array(indices, "indices"),
                             stream_of(stream, x));
      },
      nb::arg("x").noconvert(), nb::arg("k"), nb::arg("values").noconvert(), nb::arg("indices").noconvert(), nb::arg("stream") = 0,
      nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "ef_topk",
      [](const In& grad, const Out& residual, int64_t k, const Out& values, const Out& indices, uintptr_t stream) {
        ck::CK_BACKEND::ef_topk(as_array(grad, "grad"), as_array(residual, "residual"), k,
                                as_array(values, "values"), as_array(indices, "indices"), stream_of(stream, grad));
      },
      nb::arg("grad").noconvert(), nb::arg("residual").noconvert(), nb::arg("k"), nb::arg("values").noconvert(), nb::arg("indices").noconvert(),
      nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "randk_indices",
      [](int64_t size, int64_t k, uint64_t seed, uint64_t step, const Out& indices, uintptr_t stream) {
        ck::CK_BACKEND::randk_indices(size, k, seed, step, as_array(indices, "indices"), stream_of(stream, indices));
      },
      nb::arg("size"), nb::arg("k"), nb::arg("seed"), nb::arg("step"), nb::arg("indices").noconvert(),
      nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "randk",
      [](const In& x, int64_t k, uint64_t seed, uint64_t step, bool unbiased, const Out& values, const Out& indices,
         uintptr_t stream) {
        ck::CK_BACKEND::randk(as_array(x, "x"), k, seed, step, unbiased, as_array(values, "values"),
                              as_array(indices, "indices"), stream_of(stream, x));
      },
      nb::arg("x").noconvert(), nb::arg("k"), nb::arg("seed"), nb::arg("step"), nb::arg("unbiased"), nb::arg("values").noconvert(),
      nb::arg("indices").noconvert(), nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());

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
}
