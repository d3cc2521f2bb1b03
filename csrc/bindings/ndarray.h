// Shared by the binding files: the nb::ndarray types, their conversion to ck::Array, and the registry
// through which each family's binding file adds its functions to the module it is built into.
//
// Every array argument is .noconvert(): nanobind must never make a silent copy (a copied output would
// lose the kernel's writes).
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../common/array.h"
#include "../common/stream.h"

namespace ck::bindings {

namespace nb = nanobind;

#define CK_STR2(x) #x
#define CK_STR(x) CK_STR2(x)
constexpr bool kIsCuda = std::string_view(CK_STR(CK_BACKEND)) == "cuda";

using Device = std::conditional_t<kIsCuda, nb::device::cuda, nb::device::cpu>;
// Inputs may be read-only (nb::ro); outputs and in-place arguments must be writable.
using In = nb::ndarray<nb::ro, nb::c_contig, Device>;
using Out = nb::ndarray<nb::c_contig, Device>;

inline DType dtype_from_dlpack(nb::dlpack::dtype t, const char* name) {
  using code = nb::dlpack::dtype_code;
  if (t.lanes == 1) {
    if (t.code == uint8_t(code::Float) && t.bits == 32) return DType::float32;
    if (t.code == uint8_t(code::Float) && t.bits == 64) return DType::float64;
    if (t.code == uint8_t(code::Float) && t.bits == 16) return DType::float16;
    if (t.code == uint8_t(code::Bfloat) && t.bits == 16) return DType::bfloat16;
    if (t.code == uint8_t(code::Int) && t.bits == 32) return DType::int32;
    if (t.code == uint8_t(code::Int) && t.bits == 64) return DType::int64;
    if (t.code == uint8_t(code::UInt) && t.bits == 8) return DType::uint8;
  }
  throw TypeError(std::string(name) + ": unsupported dtype");
}

template <class A>
Array as_array(const A& a, const char* name) {
  int64_t size = 1;
  for (size_t d = 0; d < a.ndim(); ++d) size *= int64_t(a.shape(d));
  return Array{const_cast<void*>(static_cast<const void*>(a.data())), size, dtype_from_dlpack(a.dtype(), name)};
}

// The stream argument (an integer cudaStream_t) and the device that the arrays live on.
template <class A>
Stream stream_of(uintptr_t stream, const A& a) {
  return Stream{stream, int(a.device_id())};
}

using Binder = void (*)(nb::module_&);

inline std::vector<Binder>& registry() {
  static std::vector<Binder> binders;
  return binders;
}

struct Register {
  explicit Register(Binder binder) { registry().push_back(binder); }
};

}  // namespace ck::bindings

// CK_BINDINGS(name) { m.def(...); } in a binding file adds those definitions to the module.
#define CK_BINDINGS(name)                                                  \
  static void name(nanobind::module_& m);                                  \
  static const ck::bindings::Register name##_registered{&name};            \
  static void name(nanobind::module_& m)
