// Bindings of the quantizers of commkernels.compress (csrc/compress/quantize_api.h).
#include "../compress/quantize_api.h"
#include "ndarray.h"

namespace {

using namespace ck::bindings;
namespace backend = ck::CK_BACKEND;

CK_BINDINGS(bind_compress_quantize) {
  const auto release = nb::call_guard<nb::gil_scoped_release>();

  m.def("sign_compress", [](const In& x, int kind, const Out& bits, const Out& scale, uintptr_t stream) {
    backend::sign_compress(as_array(x, "x"), kind, as_array(bits, "bits"), as_array(scale, "scale"), stream_of(stream, x));
  }, nb::arg("x").noconvert(), nb::arg("kind"), nb::arg("bits").noconvert(), nb::arg("scale").noconvert(),
     nb::arg("stream") = 0, release);

  m.def("sign_compress_ef", [](const In& grad, const Out& residual, int kind, const Out& bits, const Out& scale,
                               uintptr_t stream) {
    backend::sign_compress_ef(as_array(grad, "grad"), as_array(residual, "residual"), kind, as_array(bits, "bits"),
                              as_array(scale, "scale"), stream_of(stream, grad));
  }, nb::arg("grad").noconvert(), nb::arg("residual").noconvert(), nb::arg("kind"), nb::arg("bits").noconvert(),
     nb::arg("scale").noconvert(), nb::arg("stream") = 0, release);

  m.def("sign_decompress", [](const In& bits, const In& scale, const Out& out, uintptr_t stream) {
    backend::sign_decompress(as_array(bits, "bits"), as_array(scale, "scale"), as_array(out, "out"),
                             stream_of(stream, out));
  }, nb::arg("bits").noconvert(), nb::arg("scale").noconvert(), nb::arg("out").noconvert(), nb::arg("stream") = 0,
     release);

  m.def("terngrad", [](const In& x, uint64_t seed, uint64_t step, const Out& codes, const Out& scale, uintptr_t stream) {
    backend::terngrad(as_array(x, "x"), seed, step, as_array(codes, "codes"), as_array(scale, "scale"),
                      stream_of(stream, x));
  }, nb::arg("x").noconvert(), nb::arg("seed"), nb::arg("step"), nb::arg("codes").noconvert(),
     nb::arg("scale").noconvert(), nb::arg("stream") = 0, release);

  m.def("terngrad_ef", [](const In& grad, const Out& residual, uint64_t seed, uint64_t step, const Out& codes,
                          const Out& scale, uintptr_t stream) {
    backend::terngrad_ef(as_array(grad, "grad"), as_array(residual, "residual"), seed, step, as_array(codes, "codes"),
                         as_array(scale, "scale"), stream_of(stream, grad));
  }, nb::arg("grad").noconvert(), nb::arg("residual").noconvert(), nb::arg("seed"), nb::arg("step"),
     nb::arg("codes").noconvert(), nb::arg("scale").noconvert(), nb::arg("stream") = 0, release);

  m.def("terngrad_decompress", [](const In& codes, const In& scale, const Out& out, uintptr_t stream) {
    backend::terngrad_decompress(as_array(codes, "codes"), as_array(scale, "scale"), as_array(out, "out"),
                                 stream_of(stream, out));
  }, nb::arg("codes").noconvert(), nb::arg("scale").noconvert(), nb::arg("out").noconvert(), nb::arg("stream") = 0,
     release);

  m.def("qsgd", [](const In& x, int64_t levels, int64_t bucket_size, uint64_t seed, uint64_t step, const Out& codes,
                   const Out& norms, uintptr_t stream) {
    backend::qsgd(as_array(x, "x"), levels, bucket_size, seed, step, as_array(codes, "codes"), as_array(norms, "norms"),
                  stream_of(stream, x));
  }, nb::arg("x").noconvert(), nb::arg("levels"), nb::arg("bucket_size"), nb::arg("seed"), nb::arg("step"),
     nb::arg("codes").noconvert(), nb::arg("norms").noconvert(), nb::arg("stream") = 0, release);

  m.def("qsgd_ef", [](const In& grad, const Out& residual, int64_t levels, int64_t bucket_size, uint64_t seed,
                      uint64_t step, const Out& codes, const Out& norms, uintptr_t stream) {
    backend::qsgd_ef(as_array(grad, "grad"), as_array(residual, "residual"), levels, bucket_size, seed, step,
                     as_array(codes, "codes"), as_array(norms, "norms"), stream_of(stream, grad));
  }, nb::arg("grad").noconvert(), nb::arg("residual").noconvert(), nb::arg("levels"), nb::arg("bucket_size"),
     nb::arg("seed"), nb::arg("step"), nb::arg("codes").noconvert(), nb::arg("norms").noconvert(),
     nb::arg("stream") = 0, release);

  m.def("qsgd_decompress", [](const In& codes, const In& norms, int64_t levels, int64_t bucket_size, const Out& out,
                              uintptr_t stream) {
    backend::qsgd_decompress(as_array(codes, "codes"), as_array(norms, "norms"), levels, bucket_size,
                             as_array(out, "out"), stream_of(stream, out));
  }, nb::arg("codes").noconvert(), nb::arg("norms").noconvert(), nb::arg("levels"), nb::arg("bucket_size"),
     nb::arg("out").noconvert(), nb::arg("stream") = 0, release);

  m.def("natural_compress", [](const In& x, uint64_t seed, uint64_t step, const Out& codes, uintptr_t stream) {
    backend::natural_compress(as_array(x, "x"), seed, step, as_array(codes, "codes"), stream_of(stream, x));
  }, nb::arg("x").noconvert(), nb::arg("seed"), nb::arg("step"), nb::arg("codes").noconvert(), nb::arg("stream") = 0,
     release);

  m.def("natural_compress_ef", [](const In& grad, const Out& residual, uint64_t seed, uint64_t step, const Out& codes,
                                  uintptr_t stream) {
    backend::natural_compress_ef(as_array(grad, "grad"), as_array(residual, "residual"), seed, step,
                                 as_array(codes, "codes"), stream_of(stream, grad));
  }, nb::arg("grad").noconvert(), nb::arg("residual").noconvert(), nb::arg("seed"), nb::arg("step"),
     nb::arg("codes").noconvert(), nb::arg("stream") = 0, release);

  m.def("natural_decompress", [](const In& codes, const Out& out, uintptr_t stream) {
    backend::natural_decompress(as_array(codes, "codes"), as_array(out, "out"), stream_of(stream, out));
  }, nb::arg("codes").noconvert(), nb::arg("out").noconvert(), nb::arg("stream") = 0, release);

  m.def("stochastic_round", [](const In& x, uint64_t seed, uint64_t step, const Out& out, uintptr_t stream) {
    backend::stochastic_round(as_array(x, "x"), seed, step, as_array(out, "out"), stream_of(stream, x));
  }, nb::arg("x").noconvert(), nb::arg("seed"), nb::arg("step"), nb::arg("out").noconvert(), nb::arg("stream") = 0,
     release);
}

}  // namespace
