// The CUDA row reduction of the graph family (scatter, segment, spmm): one warp per destination row, its
// lanes striding over the F features, each lane adding the row's slots in slot order, so the result is
// the CPU's order of operations (and needs no atomics). Slot k reads source row src_of(k) (k itself when
// src_of is null), scaled by weight[k] (1 when null); arg records id_of(k) (src_of(k) when null).
#pragma once

#include "../common/cuda_utils.cuh"
#include "../common/half.h"
#include "scatter.h"

namespace ck::cuda_detail {

constexpr int kWarpsPerBlock = 8;

template <Reduce R, class T, class Ptr, class Src, class W, class Id, class ArgT>
__global__ void row_reduce_kernel(const T* __restrict__ x, int64_t f, const Ptr* __restrict__ indptr, int64_t rows,
                                  const Src* __restrict__ src_of, const W* __restrict__ weight,
                                  const Id* __restrict__ id_of, ArgT empty_arg, T* __restrict__ out,
                                  ArgT* __restrict__ arg) {
  using A = acc_t<T>;
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;
  const int lane = threadIdx.x % 32;
  const int64_t begin = int64_t(indptr[row]), end = int64_t(indptr[row + 1]);
  for (int64_t c = lane; c < f; c += 32) {
    A acc = reduce_identity<A>(R);
    int64_t best = int64_t(empty_arg);
    for (int64_t k = begin; k < end; ++k) {
      const int64_t s = src_of ? int64_t(src_of[k]) : k;
      A v = to_acc(x[s * f + c]);
      if (weight) v *= A(to_acc(weight[k]));
      if constexpr (R == Reduce::sum || R == Reduce::mean) {
        acc += v;
      } else if constexpr (R == Reduce::mul) {
        acc *= v;
      } else {
        const bool take = k == begin || (R == Reduce::max ? beats_max(v, acc) : beats_min(v, acc));
        if (take) acc = v, best = id_of ? int64_t(id_of[k]) : s;
      }
    }
    if constexpr (R == Reduce::mean) {
      if (end > begin) acc = acc * (A(1) / A(end - begin));
    }
    if ((R == Reduce::max || R == Reduce::min) && end == begin) acc = A(0);
    out[row * f + c] = from_acc<T>(acc);
    if constexpr (R == Reduce::max || R == Reduce::min) arg[row * f + c] = ArgT(best);
  }
}

template <class T, class Ptr, class Src, class W, class Id, class ArgT>
void launch_row_reduce(Reduce r, const T* x, int64_t f, const Ptr* indptr, int64_t rows, const Src* src_of,
                       const W* weight, const Id* id_of, ArgT empty_arg, T* out, ArgT* arg, cudaStream_t stream) {
  if (rows == 0 || f == 0) return;
  const int64_t blocks = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  check(blocks < (int64_t(1) << 31), "too many rows for one launch");
  const unsigned grid = unsigned(blocks), threads = 32 * kWarpsPerBlock;
  switch (r) {
    case Reduce::sum:
      row_reduce_kernel<Reduce::sum><<<grid, threads, 0, stream>>>(x, f, indptr, rows, src_of, weight, id_of, empty_arg, out, arg);
      break;
    case Reduce::mean:
      row_reduce_kernel<Reduce::mean><<<grid, threads, 0, stream>>>(x, f, indptr, rows, src_of, weight, id_of, empty_arg, out, arg);
      break;
    case Reduce::max:
      row_reduce_kernel<Reduce::max><<<grid, threads, 0, stream>>>(x, f, indptr, rows, src_of, weight, id_of, empty_arg, out, arg);
      break;
    case Reduce::min:
      row_reduce_kernel<Reduce::min><<<grid, threads, 0, stream>>>(x, f, indptr, rows, src_of, weight, id_of, empty_arg, out, arg);
      break;
    case Reduce::mul:
      row_reduce_kernel<Reduce::mul><<<grid, threads, 0, stream>>>(x, f, indptr, rows, src_of, weight, id_of, empty_arg, out, arg);
      break;
  }
  check_launch();
}

}  // namespace ck::cuda_detail
