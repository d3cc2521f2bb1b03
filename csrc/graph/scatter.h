// scatter / segment / gather over rows: the reductions torch_scatter defines, shared by the CPU and CUDA
// launches.
//
// src is viewed as (E, F) (rows of F contiguous features); a destination row i reduces the src rows that
// belong to it in increasing source order, so a sum adds in a fixed order and max/min ties go to the lowest
// source row. Empty rows: 0 (1 for mul); the arg of an empty row is E (src.shape[0]). NaN wins max and min
// (the first NaN of a row is the result, and its row the arg), as torch's amax / amin propagate it.
#pragma once

#include <string>

#include "../common/array.h"
#include "../common/stream.h"

namespace ck {

enum class Reduce : int { sum = 0, mean = 1, max = 2, min = 3, mul = 4 };

inline Reduce reduce_from_int(int64_t r, const char* name = "reduce") {
  check(r >= 0 && r <= 4, std::string(name) + ": expected sum, mean, max, min or mul");
  return Reduce(r);
}

template <class A> CK_HD A reduce_identity(Reduce r) { return r == Reduce::mul ? A(1) : A(0); }

// max: v replaces cur when v is larger or NaN, unless cur is NaN already (the first NaN wins).
template <class A> CK_HD bool beats_max(A v, A cur) { return !(cur != cur) && (v > cur || v != v); }
template <class A> CK_HD bool beats_min(A v, A cur) { return !(cur != cur) && (v < cur || v != v); }


inline bool has_arg(Reduce r) { return r == Reduce::max || r == Reduce::min; }

// Shape checks common to scatter and segment: out is (rows, F); arg is (rows, F) with index's dtype for
// max/min and is ignored otherwise.
inline void check_reduce_outputs(const Array& src, int64_t e, int64_t f, int64_t rows, Reduce r, const Array& out,
                                 const Array& arg, DType arg_dtype) {
  check(e >= 0 && f >= 0 && src.size == e * f, "src: expected E * F elements");
  check(rows >= 0, "dim_size: expected >= 0");
  check(out.size == rows * f, "out: expected dim_size * F elements");
  check(out.dtype == src.dtype, "out: expected src's dtype");
  if (has_arg(r)) {
    check(arg.size == rows * f, "arg: expected dim_size * F elements");
    if (arg.dtype != arg_dtype) throw TypeError(std::string("arg: expected dtype ") + dtype_name(arg_dtype));
  }
  check_size_fits_int32(e, "src rows");
}

namespace CK_BACKEND {

// out[i] <- reduce over {j : index[j] == i} of src[j] (src (E, F), index (E,), out (dim_size, F)); for
// max/min arg[i, f] <- the j that gave out[i, f] (E for an empty row). index values outside [0, dim_size)
// raise ValueError.
void scatter(const Array& src, int64_t e, int64_t f, const Array& index, int64_t dim_size, int64_t reduce,
             const Array& out, const Array& arg, Stream stream);

// The same over sorted segments: out[i] <- reduce of src[indptr[i] : indptr[i + 1]] (indptr (rows + 1,),
// non-decreasing, within [0, E]).
void segment(const Array& src, int64_t e, int64_t f, const Array& indptr, int64_t reduce, const Array& out,
             const Array& arg, Stream stream);

// out[j] <- x[index[j]] (x (N, F), index (E,), out (E, F)); index values outside [0, N) raise ValueError.
void gather(const Array& x, int64_t n, int64_t f, const Array& index, const Array& out, Stream stream);

}  // namespace CK_BACKEND
}  // namespace ck
