// The quantizers on the CPU: OpenMP over independent output bytes (or groups of eight elements), with
// the fixed-order reductions of quantize.h for the scales, so that results do not depend on the thread
// count. Error-feedback variants re-read grad and residual in the quantizing pass rather than storing p,
// which keeps p unrounded and moves the same bytes.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

#include "../common/cpu_features.h"
#include "../common/parallel.h"
#include "quantize.h"
#include "quantize_api.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int64_t kByteGrain = 1 << 13;  // output bytes per parallel grain

// ---- AVX-512 versions of the sign kernel's two passes, for float32 and bfloat16 x ------------------------
// Bitwise the same as the portable code: the sums keep block_norm_sum's 16 lanes (two vectors of 8
// doubles: lanes 0-7 and 8-15), the tail goes to lanes 0.. in order, and the lanes are added in order.
// Squares use an explicitly rounded multiply, which no compiler contracts into an FMA.

template <class T> constexpr bool kHasSignAvx512 = std::is_same_v<T, float> || std::is_same_v<T, bfloat16>;

#ifdef CK_AVX512
template <class T>
CK_AVX512 inline __m512 load16_avx512(const T* x) {
  if constexpr (std::is_same_v<T, float>) {
    return _mm512_loadu_ps(x);
  } else {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
}

template <class T>
CK_AVX512 double block_norm_sum_avx512(const T* x, int64_t begin, int64_t end, NormKind kind) {
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  const __m512 sign_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    __m512 v = load16_avx512(x + i);
    __m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    __m512d b = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    if (kind == NormKind::l1) {
      v = _mm512_and_ps(v, sign_mask);
      a = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
      b = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    } else {
      a = _mm512_mul_round_pd(a, a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      b = _mm512_mul_round_pd(b, b, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    lo = _mm512_add_pd(lo, a);
    hi = _mm512_add_pd(hi, b);
  }
  double lane[kLanes];
  _mm512_storeu_pd(lane, lo);
  _mm512_storeu_pd(lane + 8, hi);
  for (int l = 0; i < end; ++i, ++l) {
    const double v = to_acc(x[i]);
    lane[l] += kind == NormKind::l1 ? abs_acc(v) : v * v;
  }
  double sum = 0.0;
  for (int l = 0; l < kLanes; ++l) sum += lane[l];
  return sum;
}

// bits[b0, b1) for full bytes (8 (b1 - b0) <= size - 8 b0).
template <class T>
CK_AVX512 void sign_pack_avx512(const T* x, int64_t b0, int64_t b1, uint8_t* bits) {
  int64_t b = b0;
  if constexpr (std::is_same_v<T, float>) {
    for (; b + 2 <= b1; b += 2) {
      const uint16_t m = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + 8 * b), _mm512_setzero_ps(), _CMP_LT_OQ);
      memcpy(bits + b, &m, 2);
    }
  } else {
    // bfloat16 v < 0: sign set, magnitude in (0, inf]: the bits, less 0x8001, at most 0x7f7f unsigned
    const __m512i offset = _mm512_set1_epi16(int16_t(0x8001)), limit = _mm512_set1_epi16(0x7f7f);
    for (; b + 4 <= b1; b += 4) {
      const __m512i v = _mm512_loadu_si512(x + 8 * b);
      const uint32_t m = _mm512_cmple_epu16_mask(_mm512_sub_epi16(v, offset), limit);
      memcpy(bits + b, &m, 4);
    }
  }
  const LoadX<T> load{x};
  for (; b < b1; ++b) bits[b] = sign_byte(load, b, int64_t(b1) * 8);
}
#endif

template <class T>
double block_norm_sum_dispatch(const LoadX<T>& load, int64_t begin, int64_t end, NormKind kind) {
#ifdef CK_AVX512
  if constexpr (kHasSignAvx512<T>) {
    if (has_avx512()) return block_norm_sum_avx512(load.x, begin, end, kind);
  }
#endif
  return block_norm_sum(load, begin, end, kind);
}
template <class Load>
double block_norm_sum_dispatch(const Load& load, int64_t begin, int64_t end, NormKind kind) {
  return block_norm_sum(load, begin, end, kind);
}

// Sum over all elements of |p| or p^2: block sums (quantize.h) added in double in block order.
template <class Load>
double norm_total(const Load& load, int64_t size, NormKind kind) {
  const int64_t blocks = (size + kNormBlock - 1) / kNormBlock;
  std::vector<double> partial(size_t(std::max<int64_t>(blocks, 1)), 0.0);
  parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      partial[size_t(b)] = block_norm_sum_dispatch(load, b * kNormBlock, std::min(size, (b + 1) * kNormBlock), kind);
  });
  double total = 0.0;
  for (int64_t b = 0; b < blocks; ++b) total += partial[size_t(b)];
  return total;
}

template <class Load>
float sign_scale(const Load& load, int64_t size, int kind) {
  if (kind == 0) return 1.0f;
  const NormKind k = NormKind(kind);
  return sign_scale_from_total(norm_total(load, size, k), size, k);
}

// max |p| (NaN propagates) as float32, float64 rounded up.
template <class Load>
float max_magnitude(const Load& load, int64_t size) {
  using A = decltype(load(0));
  using K = decltype(magnitude_key(A(0)));
  const int chunks = chunk_count(size);
  std::vector<K> partial(size_t(chunks), K(0));
  parallel_chunks(size, chunks, [&](int c, int64_t begin, int64_t end) {
    K m = 0;
    for (int64_t i = begin; i < end; ++i) m = std::max(m, magnitude_key(load(i)));
    partial[size_t(c)] = m;
  });
  return round_up_to_float(key_value(*std::max_element(partial.begin(), partial.end())));
}

// ---- sign -----------------------------------------------------------------------------------------------

template <class Load>
void sign_pack(const Load& load, int64_t size, uint8_t* bits) {
  parallel_for((size + 7) / 8, kByteGrain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) bits[b] = sign_byte(load, b, size);
  });
}

template <class T>
void sign_pack(const LoadX<T>& load, int64_t size, uint8_t* bits) {
  const int64_t full = size / 8;  // bytes of 8 elements; the last partial byte is done apart
  parallel_for(full, kByteGrain, [&](int64_t b0, int64_t b1) {
#ifdef CK_AVX512
    if constexpr (kHasSignAvx512<T>) {
      if (has_avx512()) return sign_pack_avx512(load.x, b0, b1, bits);
    }
#endif
    for (int64_t b = b0; b < b1; ++b) {
      uint32_t byte = 0;
      for (int j = 0; j < 8; ++j) byte |= uint32_t(load(b * 8 + j) < 0) << j;
      bits[b] = uint8_t(byte);
    }
  });
  if (full * 8 < size) bits[full] = sign_byte(load, full, size);
}

template <class G, class R>
void sign_pack_ef(const G* grad, R* residual, int64_t size, float scale, uint8_t* bits) {
  using A = acc_t<R>;
  const LoadSum<G, R> load{grad, residual};
  parallel_for((size + 7) / 8, kByteGrain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const uint8_t byte = sign_byte(load, b, size);
      const int n = int(std::min<int64_t>(8, size - b * 8));
      for (int j = 0; j < n; ++j) {
        const int64_t i = b * 8 + j;
        residual[i] = from_acc<R>(load(i) - A(sign_value(byte, j, scale)));
      }
      bits[b] = byte;
    }
  });
}

// ---- TernGrad -------------------------------------------------------------------------------------------

template <class Load>
void terngrad_pack(const Load& load, int64_t size, float scale, uint64_t seed, uint64_t step, uint8_t* codes) {
  parallel_for((size + 3) / 4, kByteGrain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) codes[b] = terngrad_byte(load, b, size, scale, seed, step);
  });
}

// ---- QSGD -----------------------------------------------------------------------------------------------

// Codes of the groups of eight [g0, g1) (group g: elements 8g .. 8g+7, bytes g w .. (g+1) w); for error
// feedback (residual != nullptr) also residual <- p - value.
template <class Load, class R>
void qsgd_encode_groups(const Load& load, int64_t size, int64_t levels, int64_t bucket_size, const float* norms,
                        uint64_t seed, uint64_t step, int64_t g0, int64_t g1, uint8_t* codes, R* residual) {
  using A = decltype(load(0));
  const int w = qsgd_code_bits(levels);
  BitWriter writer{codes + g0 * w};
  Philox4x32 draws{};
  for (int64_t i = g0 * 8, end = std::min(size, g1 * 8); i < end; ++i) {
    if (i % 4 == 0) draws = quant_draws(seed, step, kTagQsgd, uint64_t(i / 4));
    const float norm = norms[i / bucket_size];
    const A v = load(i);
    const uint32_t code = qsgd_code(v, norm, levels, draws.v[i % 4]);
    writer.put(code, w);
    if (residual) residual[i] = from_acc<R>(v - A(qsgd_value(code, norm, levels)));
  }
  writer.flush();
}

template <class Load, class R>
void qsgd_run(const Load& load, int64_t size, int64_t levels, int64_t bucket_size, uint64_t seed, uint64_t step,
              uint8_t* codes, float* norms, R* residual) {
  const int64_t buckets = bucket_count(size, bucket_size);
  const int64_t groups = (size + 7) / 8;
  const int64_t unit = std::lcm(int64_t(8), bucket_size);  // whole buckets and whole groups
  if (unit <= (1 << 16)) {
    // One pass: each unit's norms, then its codes while the unit is still in cache.
    const int64_t units = (size + unit - 1) / unit;
    parallel_for(units, std::max<int64_t>(1, (1 << 16) / unit), [&](int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t begin = u * unit, end = std::min(size, begin + unit);
        for (int64_t b = begin / bucket_size; b * bucket_size < end; ++b)
          norms[b] = qsgd_bucket_norm(load, b * bucket_size, std::min(size, (b + 1) * bucket_size));
        qsgd_encode_groups(load, size, levels, bucket_size, norms, seed, step, begin / 8, (end + 7) / 8, codes,
                           residual);
      }
    });
    return;
  }
  parallel_for(buckets, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      norms[b] = qsgd_bucket_norm(load, b * bucket_size, std::min(size, (b + 1) * bucket_size));
  });
  parallel_for(groups, kByteGrain, [&](int64_t g0, int64_t g1) {
    qsgd_encode_groups(load, size, levels, bucket_size, norms, seed, step, g0, g1, codes, residual);
  });
}

// ---- natural compression, stochastic rounding ---------------------------------------------------------

template <class Load, class R>
void natural_run(const Load& load, int64_t size, uint64_t seed, uint64_t step, uint8_t* codes, R* residual) {
  using A = decltype(load(0));
  parallel_for((size + 3) / 4, kByteGrain, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const Philox4x32 draws = quant_draws(seed, step, kTagNatural, uint64_t(q));
      for (int64_t i = q * 4, end = std::min(size, q * 4 + 4); i < end; ++i) {
        const A v = load(i);
        const uint8_t code = natural_code(v, draws.v[i % 4]);
        codes[i] = code;
        if (residual) residual[i] = from_acc<R>(v - A(natural_value(code)));
      }
    }
  });
}

}  // namespace

// ---- entry points -------------------------------------------------------------------------------------

void sign_compress(const Array& x, int scale_kind, const Array& bits, const Array& scale, Stream) {
  check_scale_kind(scale_kind);
  check_size_fits_int32(x.size, "x");
  uint8_t* out = check_bytes(bits, (x.size + 7) / 8, "bits");
  float* s = check_floats(scale, 1, "scale");
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const LoadX<T> load{static_cast<const T*>(x.data)};
    *s = sign_scale(load, x.size, scale_kind);
    sign_pack(load, x.size, out);
  });
}

void sign_compress_ef(const Array& grad, const Array& residual, int scale_kind, const Array& bits,
                      const Array& scale, Stream) {
  check_scale_kind(scale_kind);
  check_size_fits_int32(grad.size, "grad");
  uint8_t* out = check_bytes(bits, (grad.size + 7) / 8, "bits");
  float* s = check_floats(scale, 1, "scale");
  dispatch_grad_residual(grad, residual, [&](auto gtag, auto rtag) {
    using G = typename decltype(gtag)::type;
    using R = typename decltype(rtag)::type;
    const G* g = static_cast<const G*>(grad.data);
    R* r = static_cast<R*>(residual.data);
    *s = sign_scale(LoadSum<G, R>{g, r}, grad.size, scale_kind);
    sign_pack_ef(g, r, grad.size, *s, out);
  });
}

void sign_decompress(const Array& bits, const Array& scale, const Array& out, Stream) {
  check_size_fits_int32(out.size, "out");
  const uint8_t* in = check_bytes(bits, (out.size + 7) / 8, "bits");
  const float s = *check_floats(scale, 1, "scale");
  dispatch_float(out.dtype, "out", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* o = static_cast<T*>(out.data);
    parallel_for(out.size, int64_t(kByteGrain) * 8, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) o[i] = from_acc<T>(acc_t<T>(sign_value(in[i / 8], int(i % 8), s)));
    });
  });
}

void terngrad(const Array& x, uint64_t seed, uint64_t step, const Array& codes, const Array& scale, Stream) {
  check_size_fits_int32(x.size, "x");
  uint8_t* out = check_bytes(codes, (x.size + 3) / 4, "codes");
  float* s = check_floats(scale, 1, "scale");
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const LoadX<T> load{static_cast<const T*>(x.data)};
    *s = max_magnitude(load, x.size);
    terngrad_pack(load, x.size, *s, seed, step, out);
  });
}

void terngrad_ef(const Array& grad, const Array& residual, uint64_t seed, uint64_t step, const Array& codes,
                 const Array& scale, Stream) {
  check_size_fits_int32(grad.size, "grad");
  uint8_t* out = check_bytes(codes, (grad.size + 3) / 4, "codes");
  float* s = check_floats(scale, 1, "scale");
  dispatch_grad_residual(grad, residual, [&](auto gtag, auto rtag) {
    using G = typename decltype(gtag)::type;
    using R = typename decltype(rtag)::type;
    using A = acc_t<R>;
    const G* g = static_cast<const G*>(grad.data);
    R* r = static_cast<R*>(residual.data);
    const LoadSum<G, R> load{g, r};
    const float sc = max_magnitude(load, grad.size);
    *s = sc;
    const int64_t size = grad.size;
    parallel_for((size + 3) / 4, kByteGrain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const uint8_t byte = terngrad_byte(load, b, size, sc, seed, step);
        for (int64_t i = b * 4, end = std::min(size, b * 4 + 4); i < end; ++i)
          r[i] = from_acc<R>(load(i) - A(terngrad_value(byte, int(i - b * 4), sc)));
        out[b] = byte;
      }
    });
  });
}

void terngrad_decompress(const Array& codes, const Array& scale, const Array& out, Stream) {
  check_size_fits_int32(out.size, "out");
  const uint8_t* in = check_bytes(codes, (out.size + 3) / 4, "codes");
  const float s = *check_floats(scale, 1, "scale");
  dispatch_float(out.dtype, "out", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* o = static_cast<T*>(out.data);
    parallel_for(out.size, int64_t(kByteGrain) * 4, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) o[i] = from_acc<T>(acc_t<T>(terngrad_value(in[i / 4], int(i % 4), s)));
    });
  });
}

void qsgd(const Array& x, int64_t levels, int64_t bucket_size, uint64_t seed, uint64_t step, const Array& codes,
          const Array& norms, Stream) {
  check_qsgd_params(levels, bucket_size);
  check_size_fits_int32(x.size, "x");
  uint8_t* out = check_bytes(codes, packed_bytes(x.size, qsgd_code_bits(levels)), "codes");
  float* n = check_floats(norms, bucket_count(x.size, bucket_size), "norms");
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    qsgd_run(LoadX<T>{static_cast<const T*>(x.data)}, x.size, levels, bucket_size, seed, step, out, n,
             static_cast<float*>(nullptr));
  });
}

void qsgd_ef(const Array& grad, const Array& residual, int64_t levels, int64_t bucket_size, uint64_t seed,
             uint64_t step, const Array& codes, const Array& norms, Stream) {
  check_qsgd_params(levels, bucket_size);
  check_size_fits_int32(grad.size, "grad");
  uint8_t* out = check_bytes(codes, packed_bytes(grad.size, qsgd_code_bits(levels)), "codes");
  float* n = check_floats(norms, bucket_count(grad.size, bucket_size), "norms");
  dispatch_grad_residual(grad, residual, [&](auto gtag, auto rtag) {
    using G = typename decltype(gtag)::type;
    using R = typename decltype(rtag)::type;
    R* r = static_cast<R*>(residual.data);
    qsgd_run(LoadSum<G, R>{static_cast<const G*>(grad.data), r}, grad.size, levels, bucket_size, seed, step, out,
             n, r);
  });
}

void qsgd_decompress(const Array& codes, const Array& norms, int64_t levels, int64_t bucket_size, const Array& out,
                     Stream) {
  check_qsgd_params(levels, bucket_size);
  check_size_fits_int32(out.size, "out");
  const int w = qsgd_code_bits(levels);
  const uint8_t* in = check_bytes(codes, packed_bytes(out.size, w), "codes");
  const float* n = check_floats(norms, bucket_count(out.size, bucket_size), "norms");
  const int64_t size = out.size;
  dispatch_float(out.dtype, "out", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* o = static_cast<T*>(out.data);
    parallel_for((size + 7) / 8, kByteGrain, [&](int64_t g0, int64_t g1) {
      BitReader reader{in + g0 * w, in + codes.size};
      for (int64_t i = g0 * 8, end = std::min(size, g1 * 8); i < end; ++i)
        o[i] = from_acc<T>(acc_t<T>(qsgd_value(reader.get(w), n[i / bucket_size], levels)));
    });
  });
}

void natural_compress(const Array& x, uint64_t seed, uint64_t step, const Array& codes, Stream) {
  check_size_fits_int32(x.size, "x");
  uint8_t* out = check_bytes(codes, x.size, "codes");
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    natural_run(LoadX<T>{static_cast<const T*>(x.data)}, x.size, seed, step, out, static_cast<float*>(nullptr));
  });
}

void natural_compress_ef(const Array& grad, const Array& residual, uint64_t seed, uint64_t step,
                         const Array& codes, Stream) {
  check_size_fits_int32(grad.size, "grad");
  uint8_t* out = check_bytes(codes, grad.size, "codes");
  dispatch_grad_residual(grad, residual, [&](auto gtag, auto rtag) {
    using G = typename decltype(gtag)::type;
    using R = typename decltype(rtag)::type;
    R* r = static_cast<R*>(residual.data);
    natural_run(LoadSum<G, R>{static_cast<const G*>(grad.data), r}, grad.size, seed, step, out, r);
  });
}

void natural_decompress(const Array& codes, const Array& out, Stream) {
  check_size_fits_int32(out.size, "out");
  const uint8_t* in = check_bytes(codes, out.size, "codes");
  dispatch_float(out.dtype, "out", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* o = static_cast<T*>(out.data);
    parallel_for(out.size, int64_t(kByteGrain) * 8, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) o[i] = from_acc<T>(acc_t<T>(natural_value(in[i])));
    });
  });
}

void stochastic_round(const Array& x, uint64_t seed, uint64_t step, const Array& out, Stream) {
  check_size_fits_int32(x.size, "x");
  const float* in = x.as<float>("x");
  check(out.size == x.size, "out: expected " + std::to_string(x.size) + " elements, got " + std::to_string(out.size));
  const int64_t size = x.size;
  auto run = [&](auto* o, auto round) {
    parallel_for((size + 3) / 4, kByteGrain, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        const Philox4x32 draws = quant_draws(seed, step, kTagStochasticRound, uint64_t(q));
        for (int64_t i = q * 4, end = std::min(size, q * 4 + 4); i < end; ++i) o[i] = round(in[i], draws.v[i % 4]);
      }
    });
  };
  if (out.dtype == DType::bfloat16)
    run(static_cast<bfloat16*>(out.data), [](float v, uint32_t w) { return stochastic_round_bf16(v, w); });
  else if (out.dtype == DType::float16)
    run(static_cast<float16*>(out.data), [](float v, uint32_t w) { return stochastic_round_fp16(v, w); });
  else
    throw TypeError(std::string("out: expected bfloat16 or float16, got ") + dtype_name(out.dtype));
}

}  // namespace ck::CK_BACKEND
