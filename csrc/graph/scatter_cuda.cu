// scatter / segment / gather on the GPU. scatter sorts the index stably (graph-core's csr_build: CUB's
// radix sort of (index, j) pairs) and reduces each destination row with one warp in source order, as the
// CPU does: no atomics. Index ranges are checked by the Python layer for CUDA arrays (csr_build checks too).
#include "../common/cuda_utils.cuh"
#include "csr.h"
#include "row_reduce_cuda.cuh"
#include "scatter.h"

namespace ck::CK_BACKEND {
namespace {

template <class T, class I>
__global__ void gather_rows_kernel(const T* __restrict__ x, int64_t f, const I* __restrict__ index, int64_t e,
                                   T* __restrict__ out) {
  const int64_t total = e * f;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = t / f, c = t - j * f;
    out[t] = x[int64_t(index[j]) * f + c];
  }
}

}  // namespace

void scatter(const Array& src, int64_t e, int64_t f, const Array& index, int64_t dim_size, int64_t reduce,
             const Array& out, const Array& arg, Stream stream) {
  const Reduce r = reduce_from_int(reduce);
  check(index.size == e, "index: expected one entry per row of src");
  check_reduce_outputs(src, e, f, dim_size, r, out, arg, index.dtype);
  DeviceGuard guard(stream);
  cudaStream_t s = cuda_stream(stream);
  dispatch_index(index.dtype, "index", [&](auto itag) {
    using I = typename decltype(itag)::type;
    DeviceBuffer<int64_t> indptr(size_t(dim_size) + 1, s), perm(size_t(e), s);
    DeviceBuffer<I> sorted(size_t(e), s);
    csr_build(index, index, dim_size, Array{indptr.get(), dim_size + 1, DType::int64},
              Array{sorted.get(), e, index.dtype}, Array{perm.get(), e, DType::int64}, "index", "index", stream);
    dispatch_float(src.dtype, "src", [&](auto tag) {
      using T = typename decltype(tag)::type;
      cuda_detail::launch_row_reduce<T>(r, static_cast<const T*>(src.data), f, indptr.get(), dim_size, perm.get(),
                                        static_cast<const float*>(nullptr), static_cast<const int64_t*>(nullptr),
                                        I(e), static_cast<T*>(out.data),
                                        has_arg(r) ? static_cast<I*>(arg.data) : static_cast<I*>(nullptr), s);
    });
  });
}

void segment(const Array& src, int64_t e, int64_t f, const Array& indptr, int64_t reduce, const Array& out,
             const Array& arg, Stream stream) {
  const Reduce r = reduce_from_int(reduce);
  check(indptr.size >= 1, "indptr: expected at least one entry");
  const int64_t rows = indptr.size - 1;
  check_reduce_outputs(src, e, f, rows, r, out, arg, indptr.dtype);
  DeviceGuard guard(stream);
  dispatch_index(indptr.dtype, "indptr", [&](auto itag) {
    using I = typename decltype(itag)::type;
    dispatch_float(src.dtype, "src", [&](auto tag) {
      using T = typename decltype(tag)::type;
      cuda_detail::launch_row_reduce<T>(r, static_cast<const T*>(src.data), f, static_cast<const I*>(indptr.data),
                                        rows, static_cast<const int64_t*>(nullptr), static_cast<const float*>(nullptr),
                                        static_cast<const int64_t*>(nullptr), I(e), static_cast<T*>(out.data),
                                        has_arg(r) ? static_cast<I*>(arg.data) : static_cast<I*>(nullptr),
                                        cuda_stream(stream));
    });
  });
}

void gather(const Array& x, int64_t n, int64_t f, const Array& index, const Array& out, Stream stream) {
  const int64_t e = index.size;
  check(n >= 0 && f >= 0 && x.size == n * f, "x: expected N * F elements");
  check(out.size == e * f && out.dtype == x.dtype, "out: expected E * F elements of x's dtype");
  if (e * f == 0) return;
  DeviceGuard guard(stream);
  dispatch_index(index.dtype, "index", [&](auto itag) {
    using I = typename decltype(itag)::type;
    dispatch_float(x.dtype, "x", [&](auto tag) {
      using T = typename decltype(tag)::type;
      gather_rows_kernel<T, I><<<grid_for(e * f, 256), 256, 0, cuda_stream(stream)>>>(
          static_cast<const T*>(x.data), f, static_cast<const I*>(index.data), e, static_cast<T*>(out.data));
      check_launch();
    });
  });
}

}  // namespace ck::CK_BACKEND
