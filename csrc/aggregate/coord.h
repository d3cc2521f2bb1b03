// Coordinate-wise robust rules: median, trimmed mean, meamed, phocas, and the "mean of the beta values
// nearest the median" of Bulyan's second stage. Shared by the CPU and CUDA launches.
//
// Method: per coordinate, the n values are put in order by a sorting network (Batcher's odd-even merge
// sort for any n) run on all the coordinates of a tile at once, branch-free (min/max on integer order
// keys), so no column is ever sorted by comparison sort and the data is read once. The CPU prunes the
// network to the comparators that the rule's outputs depend on (coord_cpu.cpp); the order statistics are
// unique, so every backend and every pruning gives the same values. The rule's reduction then reads the
// ordered tile: a rank (median), a sum of the middle ranks (trimmed mean), or a window of ranks (the n-f
// values nearest a center form a contiguous window of the order).
//
// Non-finite values: values are ordered by order_key(): -inf < finite < +inf < NaN (every NaN is made
// one positive quiet NaN first), -0 < +0. So NaN counts as the largest value, and trimming removes it like
// +inf. Distance to a center is |x - c| with NaN the farthest; ties in distance keep the larger value.
// Consequently, with at most f non-finite workers and n > 2f, trimmed_mean, meamed and phocas are finite,
// and the median is finite while fewer than half of the workers (at most (n-1)/2) are non-finite.
//
// Sums are accumulated in acc_t<T> in ascending rank order (deterministic, identical on CPU and CUDA).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "../common/array.h"
#include "../common/half.h"
#include "../common/stream.h"
#include "rows.h"

namespace ck {

// ---- order keys: integers whose signed order is the value order above -------------------------------

template <class T> struct OrderKey;
template <> struct OrderKey<float> {
  using bits = uint32_t;
  using key = int32_t;
  static constexpr bits kAbs = 0x7fffffffu, kInf = 0x7f800000u, kNaN = 0x7fc00000u;
};
template <> struct OrderKey<double> {
  using bits = uint64_t;
  using key = int64_t;
  static constexpr bits kAbs = 0x7fffffffffffffffull, kInf = 0x7ff0000000000000ull, kNaN = 0x7ff8000000000000ull;
};
template <> struct OrderKey<float16> {
  using bits = uint16_t;
  using key = int16_t;
  static constexpr bits kAbs = 0x7fffu, kInf = 0x7c00u, kNaN = 0x7e00u;
};
template <> struct OrderKey<bfloat16> {
  using bits = uint16_t;
  using key = int16_t;
  static constexpr bits kAbs = 0x7fffu, kInf = 0x7f80u, kNaN = 0x7fc0u;
};
template <class T> using order_key_t = typename OrderKey<T>::key;

// Flips the magnitude bits of negative values: an involution, so it also maps keys back to bits.
template <class T>
CK_HD order_key_t<T> flip_negative(typename OrderKey<T>::bits b) {
  using K = order_key_t<T>;
  using B = typename OrderKey<T>::bits;
  const K s = K(b);
  return K(B(b ^ (B(s >> (8 * sizeof(K) - 1)) & OrderKey<T>::kAbs)));
}

template <class T>
CK_HD order_key_t<T> order_key(T x) {
  using B = typename OrderKey<T>::bits;
  B b = bit_cast<B>(x);
  if (B(b & OrderKey<T>::kAbs) > OrderKey<T>::kInf) b = OrderKey<T>::kNaN;  // one positive quiet NaN
  return flip_negative<T>(b);
}

template <class T>
CK_HD T from_order_key(order_key_t<T> k) {
  using B = typename OrderKey<T>::bits;
  return bit_cast<T>(B(flip_negative<T>(B(k))));
}

// The value of a key in the accumulation type.
template <class T>
CK_HD acc_t<T> key_value(order_key_t<T> k) {
  return to_acc(from_order_key<T>(k));
}

// ---- the sorting network ------------------------------------------------------------------------------

// Calls cmp(a, b), a < b, for every comparator of Batcher's odd-even merge sort of n wires, in order;
// after cmp(a, b) puts min in a and max in b for each, the wires are sorted. O(n log^2 n) comparators.
template <class Cmp>
CK_HD void batcher_network(int n, Cmp&& cmp) {
  for (int p = 1; p < n; p += p)
    for (int k = p; k >= 1; k /= 2)
      for (int j = k % p; j + k < n; j += k + k)
        for (int i = 0; i < k && i + j + k < n; ++i)
          if ((i + j) / (p + p) == (i + j + k) / (p + p)) cmp(i + j, i + j + k);
}

// ---- the rules ----------------------------------------------------------------------------------------

enum class CoordRule : int { median, trimmed_mean, meamed, phocas };
enum class EvenMedian : int { mean, lower, upper };

struct CoordArgs {
  CoordRule rule = CoordRule::median;
  EvenMedian even = EvenMedian::mean;
  int64_t f = 0;  // trimmed_mean: values cut at each end; meamed/phocas: n - keep values dropped
};

// (a + b) / 2, rounded once: the sum of two values of at most 32 bits is exact in double; for float64 it
// rounds once and the halving is exact (except for subnormals). No multiply, so no compiler can fuse it
// into an FMA (which would make the CPU's AVX-512 path, its baseline path and CUDA differ). When the sum
// overflows, the halves are exact and their sum is the rounded mean.
CK_HD double midpoint(double a, double b) {
  const double sum = a + b;
  return sum - sum == 0 ? sum / 2 : a / 2 + b / 2;
}

// The mean of the two middle values (or the lower/upper one) of an ordered column, in acc_t<T>.
// Two 32-bit-or-narrower values are added exactly in double, so the mean is rounded once (to acc_t).
template <class T>
CK_HD double median_of(order_key_t<T> lo, order_key_t<T> hi, EvenMedian even) {
  if (even == EvenMedian::lower || lo == hi) return double(key_value<T>(lo));
  if (even == EvenMedian::upper) return double(key_value<T>(hi));
  return midpoint(double(key_value<T>(lo)), double(key_value<T>(hi)));
}

// v rounded once to T (v is exact in double: a median of two values). float and double round directly;
// for the 16-bit types v is first rounded to odd in float (24 >= 11 + 2 bits), which makes the second
// rounding correct.
template <class T>
CK_HD T round_to(double v) {
  if (sizeof(T) == 8) return from_acc<T>(acc_t<T>(v));
  float r = float(v);
  if (sizeof(T) == 2 && double(r) != v && v - v == 0) {
    if ((double(r) > v) == (v > 0)) r = bit_cast<float>(bit_cast<uint32_t>(r) - 1u);  // toward zero
    r = bit_cast<float>(bit_cast<uint32_t>(r) | 1u);                                   // then to odd
  }
  return from_acc<T>(acc_t<T>(r));
}

// Whether, of the two window ends xl <= xr around center c, the left one is at least as far from c as the
// right one (ties in distance drop the smaller value; NaN is the farthest). twice_c is 2c, exact.
// For types of up to 32 bits, (xl + xr) <= 2c is decided exactly in double; float64 compares distances.
template <class T>
CK_HD bool left_is_farther(double xl, double xr, double c, double twice_c) {
  // branch-free (the CPU evaluates it across a tile's lanes): & rather than &&
  const bool right_nan = xr != xr;  // a NaN on the right is the farthest
  const bool finite = (xl - xl == 0) & (xr - xr == 0);
  const bool exact = xl + xr <= twice_c;
  const bool by_distance = c - xl >= xr - c;
  return !right_nan & ((sizeof(T) < 8) & finite ? exact : by_distance);
}

// The rule's result for one ordered column: col[p * stride] holds the key of the p-th smallest value. The
// CUDA kernel reduces each thread's column with this; the CPU's vectorised reduction (coord_cpu.cpp) does
// the same operations in the same order across a tile's lanes, and uses this for more than 256 workers.
template <class T>
CK_HD T reduce_column(const order_key_t<T>* col, int64_t stride, int n, const CoordArgs& args) {
  using A = acc_t<T>;
  const int lo = (n - 1) / 2, hi = n / 2, f = int(args.f);
  if (args.rule == CoordRule::median) return round_to<T>(median_of<T>(col[lo * stride], col[hi * stride], args.even));
  A mid = A(0);
  for (int p = f; p < n - f; ++p) mid += key_value<T>(col[p * stride]);
  const int m = n - 2 * f;
  if (args.rule == CoordRule::trimmed_mean) return from_acc<T>(mid / A(m));
  double center, twice;
  if (args.rule == CoordRule::meamed) {
    const double a = double(key_value<T>(col[lo * stride])), b = double(key_value<T>(col[hi * stride]));
    center = midpoint(a, b);
    twice = a + b;
  } else {
    center = double(mid / A(m));
    twice = 2 * center;
  }
  int s = 0;
  for (int k = 1; k <= f; ++k)
    s += left_is_farther<T>(double(key_value<T>(col[(k - 1) * stride])),
                            double(key_value<T>(col[(n - 1 - f + k) * stride])), center, twice);
  A acc = A(0);
  for (int p = s; p < s + n - f; ++p) acc += key_value<T>(col[p * stride]);
  return from_acc<T>(acc / A(n - f));
}

// Checks the arguments of a rule against n and calls f(TypeTag<T>{}).
template <class F>
void with_coord_args(const Rows& X, const CoordArgs& args, const Array& out, F&& f) {
  check(out.size == X.d, "out: expected " + std::to_string(X.d) + " elements, got " + std::to_string(out.size));
  if (out.dtype != X.dtype)
    throw TypeError(std::string("out: expected dtype ") + dtype_name(X.dtype) + ", got " + dtype_name(out.dtype));
  const std::string n = std::to_string(X.n), fs = std::to_string(args.f);
  check(args.f >= 0, "f: expected f >= 0, got " + fs);
  switch (args.rule) {
    case CoordRule::median:
      break;
    case CoordRule::trimmed_mean:
      check(X.n > 2 * args.f, "trimmed_mean: needs n > 2f, got n=" + n + ", f=" + fs);
      break;
    case CoordRule::meamed:
      // meamed(X, f) and the nearest-median mean with beta = n - f: the window must hold the median
      check(X.n > 2 * args.f, "meamed: needs n > 2f, got n=" + n + ", f=" + fs);
      break;
    case CoordRule::phocas:
      check(X.n > 2 * args.f, "phocas: needs n > 2f, got n=" + n + ", f=" + fs);
      break;
  }
  dispatch_float(X.dtype, "X", f);
}

namespace CK_BACKEND {

// out[j] <- the rule applied to the n values X[0][j] .. X[n-1][j], for every coordinate j.
void coordinate_rule(const Rows& X, const CoordArgs& args, const Array& out, Stream stream);

}  // namespace CK_BACKEND
}  // namespace ck
