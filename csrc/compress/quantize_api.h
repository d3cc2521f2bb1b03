// Entry points of the quantizers (csrc/compress/quantize.h has the math and the code layouts). The CPU
// module (ck::cpu, quantize_cpu.cpp) and the CUDA module (ck::cuda, quantize_cuda.cu) implement the same
// declarations. Outputs are allocated by the caller and passed in.
//
// Error-feedback variants (*_ef): p = residual + grad (in acc_t of the residual's dtype), the message is
// the compression of p, and residual <- p - decompress(message). residual is float32 or grad's dtype.
#pragma once

#include "../common/array.h"
#include "../common/stream.h"

namespace ck::CK_BACKEND {

// scale_kind: 0 none (scale 1), 1 l1 (sum|x| / d), 2 l2 (||x|| / sqrt d). bits: ceil(d / 8) uint8;
// scale: one float32.
void sign_compress(const Array& x, int scale_kind, const Array& bits, const Array& scale, Stream stream);
void sign_compress_ef(const Array& grad, const Array& residual, int scale_kind, const Array& bits,
                      const Array& scale, Stream stream);
// out (float dtype, size elements) <- scale * (+1 or -1).
void sign_decompress(const Array& bits, const Array& scale, const Array& out, Stream stream);

// codes: ceil(d / 4) uint8; scale: one float32 (max|x|, float64 rounded up).
void terngrad(const Array& x, uint64_t seed, uint64_t step, const Array& codes, const Array& scale, Stream stream);
void terngrad_ef(const Array& grad, const Array& residual, uint64_t seed, uint64_t step, const Array& codes,
                 const Array& scale, Stream stream);
void terngrad_decompress(const Array& codes, const Array& scale, const Array& out, Stream stream);

// codes: ceil(d w / 8) uint8 with w = 1 + ceil(log2(levels + 1)); norms: ceil(d / bucket_size) float32.
void qsgd(const Array& x, int64_t levels, int64_t bucket_size, uint64_t seed, uint64_t step, const Array& codes,
          const Array& norms, Stream stream);
void qsgd_ef(const Array& grad, const Array& residual, int64_t levels, int64_t bucket_size, uint64_t seed,
             uint64_t step, const Array& codes, const Array& norms, Stream stream);
void qsgd_decompress(const Array& codes, const Array& norms, int64_t levels, int64_t bucket_size,
                     const Array& out, Stream stream);

// codes: d uint8.
void natural_compress(const Array& x, uint64_t seed, uint64_t step, const Array& codes, Stream stream);
void natural_compress_ef(const Array& grad, const Array& residual, uint64_t seed, uint64_t step,
                         const Array& codes, Stream stream);
void natural_decompress(const Array& codes, const Array& out, Stream stream);

// x float32; out bfloat16 or float16 of x's size.
void stochastic_round(const Array& x, uint64_t seed, uint64_t step, const Array& out, Stream stream);

}  // namespace ck::CK_BACKEND

// ---- argument checks shared by the two launches (host code) --------------------------------------------

#include <string>

#include "args.h"

namespace ck {

constexpr int64_t kMaxQsgdLevels = (1 << 16) - 1;  // codes of at most 17 bits

inline uint8_t* check_bytes(const Array& a, int64_t n, const char* name) {
  check(a.size == n, std::string(name) + ": expected " + std::to_string(n) + " bytes, got " + std::to_string(a.size));
  return a.as<uint8_t>(name);
}

inline float* check_floats(const Array& a, int64_t n, const char* name) {
  check(a.size == n, std::string(name) + ": expected " + std::to_string(n) + " float32 elements, got " +
                         std::to_string(a.size));
  return a.as<float>(name);
}

inline void check_scale_kind(int kind) {
  check(kind >= 0 && kind <= 2, "scale: expected 0 (none), 1 (l1) or 2 (l2), got " + std::to_string(kind));
}

inline void check_qsgd_params(int64_t levels, int64_t bucket_size) {
  check(levels >= 1 && levels <= kMaxQsgdLevels,
        "levels: expected 1 <= levels <= " + std::to_string(kMaxQsgdLevels) + ", got " + std::to_string(levels));
  check(bucket_size >= 1, "bucket_size: expected >= 1, got " + std::to_string(bucket_size));
}

inline int64_t bucket_count(int64_t size, int64_t bucket_size) { return (size + bucket_size - 1) / bucket_size; }

}  // namespace ck
