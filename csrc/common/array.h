// A type-erased, contiguous array handed from the bindings to a kernel, and the dtype dispatch over it.
//
// The bindings turn every nb::ndarray into an Array, so kernel code never sees nanobind and the same
// kernel entry points serve the CPU and the CUDA module.
#pragma once

#include <cstdint>
#include <string>

#include "errors.h"
#include "half.h"

namespace ck {

enum class DType { float32, float64, float16, bfloat16, int32, int64, uint8 };

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::float32: return "float32";
    case DType::float64: return "float64";
    case DType::float16: return "float16";
    case DType::bfloat16: return "bfloat16";
    case DType::int32: return "int32";
    case DType::int64: return "int64";
    case DType::uint8: return "uint8";
  }
  return "?";
}

inline int64_t dtype_bytes(DType t) {
  switch (t) {
    case DType::float64:
    case DType::int64: return 8;
    case DType::float32:
    case DType::int32: return 4;
    case DType::float16:
    case DType::bfloat16: return 2;
    case DType::uint8: return 1;
  }
  return 1;
}

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::float32; }
template <> constexpr DType dtype_of<double>() { return DType::float64; }
template <> constexpr DType dtype_of<float16>() { return DType::float16; }
template <> constexpr DType dtype_of<bfloat16>() { return DType::bfloat16; }
template <> constexpr DType dtype_of<int32_t>() { return DType::int32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::int64; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::uint8; }

struct Array {
  void* data = nullptr;
  int64_t size = 0;  // number of elements (contiguous)
  DType dtype = DType::float32;

  template <class T> T* as(const char* name) const {
    if (dtype != dtype_of<T>())
      throw TypeError(std::string(name) + ": expected dtype " + dtype_name(dtype_of<T>()) + ", got " +
                      dtype_name(dtype));
    return static_cast<T*>(data);
  }
};

template <class T> struct TypeTag { using type = T; };

// Calls f(TypeTag<T>{}) with T the storage type of a floating-point dtype.
template <class F>
decltype(auto) dispatch_float(DType t, const char* name, F&& f) {
  switch (t) {
    case DType::float32: return f(TypeTag<float>{});
    case DType::float64: return f(TypeTag<double>{});
    case DType::float16: return f(TypeTag<float16>{});
    case DType::bfloat16: return f(TypeTag<bfloat16>{});
    default:
      throw TypeError(std::string(name) + ": expected a float32, float64, float16 or bfloat16 array, got " +
                      dtype_name(t));
  }
}

// Calls f(TypeTag<I>{}) with I the storage type of an int32 or int64 (index) array.
template <class F>
decltype(auto) dispatch_index(DType t, const char* name, F&& f) {
  switch (t) {
    case DType::int32: return f(TypeTag<int32_t>{});
    case DType::int64: return f(TypeTag<int64_t>{});
    default: throw TypeError(std::string(name) + ": expected an int32 or int64 array, got " + dtype_name(t));
  }
}

// Indices may be at most this large: index outputs are int32.
constexpr int64_t kMaxInt32Size = (int64_t(1) << 31) - 1;

inline void check_size_fits_int32(int64_t size, const char* name) {
  if (size > kMaxInt32Size)
    throw ValueError(std::string(name) + ": arrays of more than 2^31 - 1 elements are not supported (got " +
                     std::to_string(size) + ")");
}

}  // namespace ck
