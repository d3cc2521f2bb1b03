// Entry points of the compression kernels. The CPU module (ck::cpu, *_cpu.cpp) and the CUDA module
// (ck::cuda, *_cuda.cu) implement the same declarations; CMake sets CK_BACKEND to cpu or cuda, and the one
// binding file (csrc/bindings/module.cpp) binds whichever module it is built into.
//
// Outputs are allocated by the caller (the Python layer, in the caller's framework) and passed in.
#pragma once

#include "../common/array.h"
#include "../common/stream.h"

namespace ck::CK_BACKEND {

// indices (int32, ascending) and values (x's dtype) of the k entries of largest |x|; ties to the lower
// index; NaN counts as the largest magnitude.
void topk(const Array& x, int64_t k, const Array& values, const Array& indices, Stream stream);

// residual <- residual + grad; (values, indices) <- topk(residual); residual[indices] <- 0.
void ef_topk(const Array& grad, const Array& residual, int64_t k, const Array& values, const Array& indices,
             Stream stream);

// indices <- k distinct indices of [0, size), ascending, drawn from the Philox stream keyed (seed, step).
void randk_indices(int64_t size, int64_t k, uint64_t seed, uint64_t step, const Array& indices, Stream stream);

// randk_indices of x.size, then values <- x[indices] * (size / k if unbiased else 1).
void randk(const Array& x, int64_t k, uint64_t seed, uint64_t step, bool unbiased, const Array& values,
           const Array& indices, Stream stream);

}  // namespace ck::CK_BACKEND
