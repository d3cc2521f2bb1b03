// MoE balancing: the load-balancing loss (Switch), the z-loss (ST-MoE), the aux-loss-free expert-bias update
// (DeepSeek-V3), and the row statistics (max, log of the sum of exponentials) they and expert choice share.
//
// The float math is written once here for the CPU and the GPU. exp_f32 and log_f32 are Cephes' polynomials
// spelled with explicit roundings (no fused multiply-adds on either side: fmul/fadd map to __fmul_rn /
// __fadd_rn on the device, and the CPU files are compiled with contraction off), and row_stats sums the
// exponentials in a fixed 16-lane order, so a CPU and a GPU compute the same bits for float32, float16 and
// bfloat16 inputs. float64 inputs use the C library's exp and log (the results may then differ in the last
// bit between backends).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "../common/array.h"
#include "../common/stream.h"

// Host+device like CK_HD, and always inlined on the host, so that the AVX-512 builds of the row loops
// (balance_rows.h) inline and vectorise all of it.
#if defined(__CUDACC__)
#define CK_MOE_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define CK_MOE_HD __attribute__((always_inline)) inline
#else
#define CK_MOE_HD inline
#endif

namespace ck {
namespace moe {

CK_MOE_HD float fmul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
CK_MOE_HD float fadd(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
CK_MOE_HD float fsub(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
CK_MOE_HD double fmul(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
CK_MOE_HD double fadd(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
CK_MOE_HD double fsub(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}

// exp(x) within about 2 ulp; 0 below -87 (results under ~1.6e-38 flush to zero), inf above 88, NaN stays NaN.
// Branch-free, so loops over it vectorise.
CK_MOE_HD float exp_f32(float x) {
  const float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);  // NaN fails both tests, and is fixed below
  const float n = fsub(fadd(fmul(xc, 1.44269504088896341f), 12582912.0f), 12582912.0f);  // round to nearest
  float r = fsub(xc, fmul(n, 0.693359375f));
  r = fsub(r, fmul(n, -2.12194440e-4f));
  float p = 1.9875691500e-4f;
  p = fadd(fmul(p, r), 1.3981999507e-3f);
  p = fadd(fmul(p, r), 8.3334519073e-3f);
  p = fadd(fmul(p, r), 4.1665795894e-2f);
  p = fadd(fmul(p, r), 1.6666665459e-1f);
  p = fadd(fmul(p, r), 5.0000001201e-1f);
  const float y = fadd(fadd(fmul(fmul(p, r), r), r), 1.0f);
  const int32_t e = int32_t(n) + 127;  // n in [-126, 127]
  float result = fmul(y, bit_cast<float>(uint32_t(e) << 23));
  result = x < -87.0f ? 0.0f : result;
  result = x > 88.0f ? std::numeric_limits<float>::infinity() : result;
  return x != x ? x : result;
}

// log(s) within about 1 ulp for s >= 0 (normal or zero); log(0) = -inf, log(inf) = inf, NaN stays NaN.
CK_MOE_HD float log_f32(float s) {
  const bool normal = s > 0.0f && s < std::numeric_limits<float>::infinity();
  const uint32_t bits = bit_cast<uint32_t>(normal ? s : 1.0f);
  const float m = bit_cast<float>((bits & 0x007fffffu) | 0x3f000000u);  // s = m 2^e, m in [0.5, 1)
  const bool low = m < 0.707106781186547524f;  // then s = (2m) 2^(e-1): x = 2m - 1 stays near 0
  const int32_t e = int32_t(bits >> 23) - 126 - int32_t(low);
  const float x = low ? fsub(fadd(m, m), 1.0f) : fsub(m, 1.0f);
  const float z = fmul(x, x);
  float y = 7.0376836292e-2f;
  y = fadd(fmul(y, x), -1.1514610310e-1f);
  y = fadd(fmul(y, x), 1.1676998740e-1f);
  y = fadd(fmul(y, x), -1.2420140846e-1f);
  y = fadd(fmul(y, x), 1.4249322787e-1f);
  y = fadd(fmul(y, x), -1.6668057665e-1f);
  y = fadd(fmul(y, x), 2.0000714765e-1f);
  y = fadd(fmul(y, x), -2.4999993993e-1f);
  y = fadd(fmul(y, x), 3.3333331174e-1f);
  y = fmul(fmul(y, x), z);
  const float fe = float(e);
  y = fadd(y, fmul(fe, -2.12194440e-4f));
  y = fsub(y, fmul(0.5f, z));
  const float result = fadd(fadd(x, y), fmul(fe, 0.693359375f));
  // branch-free, so that loops over rows vectorise: the special values are selected at the end
  const float special = s == 0.0f ? -std::numeric_limits<float>::infinity()
                                  : (s == std::numeric_limits<float>::infinity() ? s : std::numeric_limits<float>::quiet_NaN());
  return normal ? result : special;
}

CK_MOE_HD float exp_acc(float x) { return exp_f32(x); }
CK_MOE_HD float log_acc(float x) { return log_f32(x); }
CK_MOE_HD double exp_acc(double x) { return ::exp(x); }
CK_MOE_HD double log_acc(double x) { return ::log(x); }

constexpr int kLanes = 16;  // the exponentials of a row are summed in 16 lanes (j mod 16), then a fixed tree

// A row's max (0 when it is infinite, as torch.logsumexp does) and log(sum_j exp(x_j - max)), so that
// logsumexp = max + log_sum and log softmax_j = (x_j - max) - log_sum.
template <class A>
struct RowStats {
  A max;
  A log_sum;
};

template <class T>
CK_MOE_HD RowStats<acc_t<T>> row_stats(const T* x, int64_t E) {
  using A = acc_t<T>;
  A lane_max[kLanes];  // per lane, so that the loop vectorises; the max is the same in any order
  for (int l = 0; l < kLanes; ++l) lane_max[l] = -std::numeric_limits<A>::infinity();
  int64_t i = 0;
  for (; i + kLanes <= E; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const A v = to_acc(x[i + l]);
      lane_max[l] = v > lane_max[l] ? v : lane_max[l];  // a NaN is skipped here, and poisons the sum below
    }
  if (i < E)  // the tail as one full, masked iteration (-inf in the missing lanes), so that it vectorises too
    for (int l = 0; l < kLanes; ++l) {
      const A v = i + l < E ? to_acc(x[i + l]) : -std::numeric_limits<A>::infinity();
      lane_max[l] = v > lane_max[l] ? v : lane_max[l];
    }
  A m = lane_max[0];
  for (int l = 1; l < kLanes; ++l) m = lane_max[l] > m ? lane_max[l] : m;
  if (m == std::numeric_limits<A>::infinity() || m == -std::numeric_limits<A>::infinity()) m = A(0);
  A part[kLanes];
  for (int l = 0; l < kLanes; ++l) part[l] = A(0);
  int64_t j = 0;
  for (; j + kLanes <= E; j += kLanes)
    for (int l = 0; l < kLanes; ++l) part[l] = fadd(part[l], exp_acc(fsub(to_acc(x[j + l]), m)));
  if (j < E)  // exp(-inf) = 0 exactly in the missing lanes: the same sums as leaving them out
    for (int l = 0; l < kLanes; ++l) {
      const A v = j + l < E ? to_acc(x[j + l]) : -std::numeric_limits<A>::infinity();
      part[l] = fadd(part[l], exp_acc(fsub(v, m)));
    }
  for (int w = kLanes / 2; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) part[l] = fadd(part[l], part[l + w]);
  return {m, log_acc(part[0])};
}

// Rows of `chunk_rows` per chunk, at most kMaxChunks chunks: a function of T alone, so that reductions in
// chunk order do not depend on the thread count.
constexpr int64_t kChunkRows = 1024;
constexpr int kMaxChunks = 64;
inline int row_chunks(int64_t T) {
  const int64_t c = (T + kChunkRows - 1) / kChunkRows;
  return int(c < 1 ? 1 : (c > kMaxChunks ? kMaxChunks : c));
}

// The accumulation dtype a float array's results have: float64 for float64, float32 otherwise.
inline DType acc_dtype(DType t) { return t == DType::float64 ? DType::float64 : DType::float32; }

inline void check_acc_array(const Array& a, DType values, int64_t size, const char* name) {
  check(a.dtype == acc_dtype(values), std::string(name) + ": expected dtype " + dtype_name(acc_dtype(values)));
  check(a.size == size, std::string(name) + ": expected " + std::to_string(size) + " elements, got " +
                            std::to_string(a.size));
}

inline void check_matrix(const Array& x, int64_t T, int64_t E, const char* name) {
  check(T >= 0 && E >= 1, std::string(name) + ": expected T >= 0 rows and E >= 1 columns");
  check(x.size == T * E, std::string(name) + ": expected T * E = " + std::to_string(T * E) + " elements, got " +
                             std::to_string(x.size));
}

}  // namespace moe

namespace CK_BACKEND {

// probs [T, E] (any float dtype), ids [T, k] (int32 or int64, values in [0, E)). loss [1] and fraction [E]
// have the accumulation dtype. fraction_i = (number of ids equal to i) / (T k), counting only column 0 of ids
// when first_only (then over T); loss = E sum_i fraction_i mean_t probs[t, i]; 0 when T = 0.
void load_balancing_loss(const Array& probs, const Array& ids, int64_t T, int64_t E, int64_t k, bool first_only,
                         const Array& loss, const Array& fraction, Stream stream);

// logits [T, E]; lse [T] <- logsumexp of each row, loss [1] <- mean_t lse_t^2 (0 when T = 0); accumulation dtype.
void z_loss(const Array& logits, int64_t T, int64_t E, const Array& loss, const Array& lse, Stream stream);

// grad_logits [T, E] (logits' dtype) <- grad[0] * 2 / T * lse_t * exp(logits[t, j] - lse_t).
void z_loss_backward(const Array& logits, const Array& lse, const Array& grad, int64_t T, int64_t E,
                     const Array& grad_logits, Stream stream);

// bias [R, E] float32, counts [R, E] (int32, int64, float32 or float64): per row r,
// bias[r, j] += float(rate) * sign(mean_j counts[r, :] - counts[r, j]), in place.
void update_expert_bias(const Array& bias, const Array& counts, int64_t E, double rate, Stream stream);

}  // namespace CK_BACKEND
}  // namespace ck
