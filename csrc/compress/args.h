// Argument checks and dtype dispatch shared by the CPU and CUDA launches of the compression kernels.
// The Python layer checks first, with friendlier messages; these checks keep a direct call from ever
// reading or writing out of bounds.
#pragma once

#include <string>
#include <type_traits>

#include "../common/array.h"

namespace ck {

inline void check_k(int64_t size, int64_t k) {
  check(k >= 0 && k <= size, "k: expected 0 <= k <= size (" + std::to_string(size) + "), got " + std::to_string(k));
}

template <class T>
void check_sparse_outputs(int64_t k, const Array& values, const Array& indices) {
  check(values.size == k, "values: expected k=" + std::to_string(k) + " elements, got " + std::to_string(values.size));
  check(indices.size == k, "indices: expected k=" + std::to_string(k) + " elements, got " + std::to_string(indices.size));
  values.as<T>("values");
  indices.as<int32_t>("indices");
}

inline void check_randk_args(int64_t size, int64_t k, const Array& indices) {
  check(size >= 0, "size: expected >= 0, got " + std::to_string(size));
  check_size_fits_int32(size, "size");
  check_k(size, k);
  check(indices.size == k, "indices: expected k=" + std::to_string(k) + " elements");
  indices.as<int32_t>("indices");
}

// Calls f(TypeTag<G>{}, TypeTag<R>{}) for the (grad, residual) dtype pairs that ef_topk accepts: the
// residual has the grad's dtype, or is float32 for a 16-bit grad.
template <class F>
void dispatch_grad_residual(const Array& grad, const Array& residual, F&& f) {
  check(grad.size == residual.size, "residual: expected " + std::to_string(grad.size) +
                                        " elements like grad, got " + std::to_string(residual.size));
  dispatch_float(grad.dtype, "grad", [&](auto gtag) {
    using G = typename decltype(gtag)::type;
    if (residual.dtype == grad.dtype) return f(gtag, gtag);
    if constexpr (sizeof(G) == 2) {
      if (residual.dtype == DType::float32) return f(gtag, TypeTag<float>{});
    }
    throw TypeError(std::string("residual: expected float32 or the grad's dtype (") + dtype_name(grad.dtype) +
                    "), got " + dtype_name(residual.dtype));
  });
}

// Checks topk's arguments and calls f(x, values, indices) with typed pointers (T: x's dtype).
template <class F>
void with_topk_args(const Array& x, int64_t k, const Array& values, const Array& indices, F&& f) {
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    check_size_fits_int32(x.size, "x");
    check_k(x.size, k);
    check_sparse_outputs<T>(k, values, indices);
    f(static_cast<const T*>(x.data), values.as<T>("values"), indices.as<int32_t>("indices"));
  });
}

// Checks ef_topk's arguments and calls f(grad, residual, values, indices) with typed pointers.
template <class F>
void with_ef_topk_args(const Array& grad, const Array& residual, int64_t k, const Array& values,
                       const Array& indices, F&& f) {
  check_size_fits_int32(grad.size, "grad");
  dispatch_grad_residual(grad, residual, [&](auto gtag, auto rtag) {
    using G = typename decltype(gtag)::type;
    using R = typename decltype(rtag)::type;
    check_k(residual.size, k);
    check_sparse_outputs<R>(k, values, indices);
    f(static_cast<const G*>(grad.data), static_cast<R*>(residual.data), values.as<R>("values"),
      indices.as<int32_t>("indices"));
  });
}

}  // namespace ck
