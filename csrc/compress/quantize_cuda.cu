// The quantizers on the GPU: one thread per output byte (or group of eight elements for QSGD), the same
// quantize.h functions as the CPU. The fixed-order reductions mirror the CPU's: one thread per block of
// kNormBlock elements (or per QSGD bucket), then one thread adds the block sums in block order, so the
// scales have the CPU's bits. The max of TernGrad uses integer atomicMax on magnitude keys (exact and
// order-independent).
#include <type_traits>

#include "../common/cuda_utils.cuh"
#include "quantize.h"
#include "quantize_api.h"

namespace ck::CK_BACKEND {
namespace {

constexpr int kThreads = 256;

#define CK_GRID_STRIDE(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

template <class Load>
__global__ void block_sums_kernel(Load load, int64_t size, NormKind kind, double* partial) {
  const int64_t blocks = (size + kNormBlock - 1) / kNormBlock;
  CK_GRID_STRIDE(b, blocks) {
    const int64_t end = (b + 1) * kNormBlock < size ? (b + 1) * kNormBlock : size;
    partial[b] = block_norm_sum(load, b * kNormBlock, end, kind);
  }
}

// scale <- sign_scale_from_total(sum of partial in order) (or 1 for kind 0).
__global__ void sign_scale_kernel(const double* partial, int64_t blocks, int64_t size, int kind, float* scale) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  if (kind == 0) {
    *scale = 1.0f;
    return;
  }
  double total = 0.0;
  for (int64_t b = 0; b < blocks; ++b) total += partial[b];
  *scale = sign_scale_from_total(total, size, NormKind(kind));
}

template <class Load>
void sign_scale_launch(const Load& load, int64_t size, int kind, float* scale, cudaStream_t s) {
  const int64_t blocks = (size + kNormBlock - 1) / kNormBlock;
  DeviceBuffer<double> partial(size_t(blocks), s);
  if (kind != 0 && blocks > 0) {
    block_sums_kernel<<<grid_for(blocks, kThreads), kThreads, 0, s>>>(load, size, NormKind(kind), partial.get());
    check_launch();
  }
  sign_scale_kernel<<<1, 1, 0, s>>>(partial.get(), blocks, size, kind, scale);
  check_launch();
}

template <class Load>
__global__ void sign_pack_kernel(Load load, int64_t size, uint8_t* bits) {
  CK_GRID_STRIDE(b, (size + 7) / 8) bits[b] = sign_byte(load, b, size);
}

template <class G, class R>
__global__ void sign_pack_ef_kernel(LoadSum<G, R> load, R* residual, int64_t size, const float* scale, uint8_t* bits) {
  using A = acc_t<R>;
  const float sc = *scale;
  CK_GRID_STRIDE(b, (size + 7) / 8) {
    const uint8_t byte = sign_byte(load, b, size);
    for (int64_t i = b * 8; i < size && i < b * 8 + 8; ++i)
      residual[i] = from_acc<R>(load(i) - A(sign_value(byte, int(i - b * 8), sc)));
    bits[b] = byte;
  }
}

template <class T>
__global__ void sign_decompress_kernel(const uint8_t* bits, const float* scale, int64_t size, T* out) {
  const float sc = *scale;
  CK_GRID_STRIDE(i, size) out[i] = from_acc<T>(acc_t<T>(sign_value(bits[i / 8], int(i % 8), sc)));
}

// ---- TernGrad -----------------------------------------------------------------------------------------

__device__ inline void atomic_max_key(uint32_t* target, uint32_t v) { atomicMax(target, v); }
__device__ inline void atomic_max_key(uint64_t* target, uint64_t v) {
  atomicMax(reinterpret_cast<unsigned long long*>(target), static_cast<unsigned long long>(v));
}

template <class Load, class K>
__global__ void max_key_kernel(Load load, int64_t size, K* result) {
  K m = 0;
  CK_GRID_STRIDE(i, size) {
    const K k = magnitude_key(load(i));
    m = k > m ? k : m;
  }
  atomic_max_key(result, m);
}

template <class K>
__global__ void key_to_scale_kernel(const K* key, float* scale) {
  if (blockIdx.x == 0 && threadIdx.x == 0) *scale = round_up_to_float(key_value(*key));
}

template <class Load>
void max_magnitude_launch(const Load& load, int64_t size, float* scale, cudaStream_t s) {
  using A = decltype(load(0));
  using K = decltype(magnitude_key(A(0)));
  DeviceBuffer<K> key(1, s);
  CK_CUDA_CHECK(cudaMemsetAsync(key.get(), 0, sizeof(K), s));
  if (size > 0) {
    max_key_kernel<<<grid_for(size, kThreads, 1024), kThreads, 0, s>>>(load, size, key.get());
    check_launch();
  }
  key_to_scale_kernel<<<1, 1, 0, s>>>(key.get(), scale);
  check_launch();
}

template <class Load>
__global__ void terngrad_pack_kernel(Load load, int64_t size, const float* scale, uint64_t seed, uint64_t step,
                                     uint8_t* codes) {
  const float sc = *scale;
  CK_GRID_STRIDE(b, (size + 3) / 4) codes[b] = terngrad_byte(load, b, size, sc, seed, step);
}

template <class G, class R>
__global__ void terngrad_pack_ef_kernel(LoadSum<G, R> load, R* residual, int64_t size, const float* scale,
                                        uint64_t seed, uint64_t step, uint8_t* codes) {
  using A = acc_t<R>;
  const float sc = *scale;
  CK_GRID_STRIDE(b, (size + 3) / 4) {
    const uint8_t byte = terngrad_byte(load, b, size, sc, seed, step);
    for (int64_t i = b * 4; i < size && i < b * 4 + 4; ++i)
      residual[i] = from_acc<R>(load(i) - A(terngrad_value(byte, int(i - b * 4), sc)));
    codes[b] = byte;
  }
}

template <class T>
__global__ void terngrad_decompress_kernel(const uint8_t* codes, const float* scale, int64_t size, T* out) {
  const float sc = *scale;
  CK_GRID_STRIDE(i, size) out[i] = from_acc<T>(acc_t<T>(terngrad_value(codes[i / 4], int(i % 4), sc)));
}

// ---- QSGD ---------------------------------------------------------------------------------------------

template <class Load>
__global__ void qsgd_norms_kernel(Load load, int64_t size, int64_t bucket_size, float* norms) {
  CK_GRID_STRIDE(b, (size + bucket_size - 1) / bucket_size) {
    const int64_t end = (b + 1) * bucket_size < size ? (b + 1) * bucket_size : size;
    norms[b] = qsgd_bucket_norm(load, b * bucket_size, end);
  }
}

// One thread per group of eight elements (w bytes of codes); residual may be null.
template <class Load, class R>
__global__ void qsgd_encode_kernel(Load load, int64_t size, int64_t levels, int64_t bucket_size, const float* norms,
                                   uint64_t seed, uint64_t step, uint8_t* codes, R* residual) {
  using A = decltype(load(0));
  const int w = qsgd_code_bits(levels);
  CK_GRID_STRIDE(g, (size + 7) / 8) {
    BitWriter writer{codes + g * w};
    Philox4x32 draws{};
    for (int64_t i = g * 8; i < size && i < g * 8 + 8; ++i) {
      if (i % 4 == 0) draws = quant_draws(seed, step, kTagQsgd, uint64_t(i / 4));
      const float norm = norms[i / bucket_size];
      const A v = load(i);
      const uint32_t code = qsgd_code(v, norm, levels, draws.v[i % 4]);
      writer.put(code, w);
      if (residual) residual[i] = from_acc<R>(v - A(qsgd_value(code, norm, levels)));
    }
    writer.flush();
  }
}

template <class T>
__global__ void qsgd_decompress_kernel(const uint8_t* codes, int64_t nbytes, const float* norms, int64_t levels,
                                       int64_t bucket_size, int64_t size, T* out) {
  const int w = qsgd_code_bits(levels);
  CK_GRID_STRIDE(g, (size + 7) / 8) {
    BitReader reader{codes + g * w, codes + nbytes};
    for (int64_t i = g * 8; i < size && i < g * 8 + 8; ++i)
      out[i] = from_acc<T>(acc_t<T>(qsgd_value(reader.get(w), norms[i / bucket_size], levels)));
  }
}

template <class Load, class R>
void qsgd_launch(const Load& load, int64_t size, int64_t levels, int64_t bucket_size, uint64_t seed, uint64_t step,
                 uint8_t* codes, float* norms, R* residual, cudaStream_t s) {
  if (size == 0) return;
  const int64_t buckets = bucket_count(size, bucket_size);
  qsgd_norms_kernel<<<grid_for(buckets, kThreads), kThreads, 0, s>>>(load, size, bucket_size, norms);
  check_launch();
  qsgd_encode_kernel<<<grid_for((size + 7) / 8, kThreads), kThreads, 0, s>>>(load, size, levels, bucket_size, norms,
                                                                            seed, step, codes, residual);
  check_launch();
}

// ---- natural compression, stochastic rounding ---------------------------------------------------------

template <class Load, class R>
__global__ void natural_kernel(Load load, int64_t size, uint64_t seed, uint64_t step, uint8_t* codes, R* residual) {
  using A = decltype(load(0));
  CK_GRID_STRIDE(q, (size + 3) / 4) {
    const Philox4x32 draws = quant_draws(seed, step, kTagNatural, uint64_t(q));
    for (int64_t i = q * 4; i < size && i < q * 4 + 4; ++i) {
      const A v = load(i);
      const uint8_t code = natural_code(v, draws.v[i % 4]);
      codes[i] = code;
      if (residual) residual[i] = from_acc<R>(v - A(natural_value(code)));
    }
  }
}

template <class T>
__global__ void natural_decompress_kernel(const uint8_t* codes, int64_t size, T* out) {
  CK_GRID_STRIDE(i, size) out[i] = from_acc<T>(acc_t<T>(natural_value(codes[i])));
}

template <class H>
__global__ void stochastic_round_kernel(const float* x, int64_t size, uint64_t seed, uint64_t step, H* out) {
  CK_GRID_STRIDE(q, (size + 3) / 4) {
    const Philox4x32 draws = quant_draws(seed, step, kTagStochasticRound, uint64_t(q));
    for (int64_t i = q * 4; i < size && i < q * 4 + 4; ++i) {
      if constexpr (sizeof(H) == 2 && std::is_same_v<H, bfloat16>)
        out[i] = stochastic_round_bf16(x[i], draws.v[i % 4]);
      else
        out[i] = stochastic_round_fp16(x[i], draws.v[i % 4]);
    }
  }
}

template <class F>
void launch_over(int64_t n, F&& launch) {
  if (n > 0) {
    launch(grid_for(n, kThreads));
    check_launch();
  }
}

}  // namespace

// ---- entry points -------------------------------------------------------------------------------------

void sign_compress(const Array& x, int scale_kind, const Array& bits, const Array& scale, Stream stream) {
  check_scale_kind(scale_kind);
  check_size_fits_int32(x.size, "x");
  uint8_t* out = check_bytes(bits, (x.size + 7) / 8, "bits");
  float* sc = check_floats(scale, 1, "scale");
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    DeviceGuard guard(stream);
    const cudaStream_t s = cuda_stream(stream);
    const LoadX<T> load{static_cast<const T*>(x.data)};
    sign_scale_launch(load, x.size, scale_kind, sc, s);
    launch_over((x.size + 7) / 8, [&](unsigned grid) { sign_pack_kernel<<<grid, kThreads, 0, s>>>(load, x.size, out); });
  });
}

void sign_compress_ef(const Array& grad, const Array& residual, int scale_kind, const Array& bits,
                      const Array& scale, Stream stream) {
  check_scale_kind(scale_kind);
  check_size_fits_int32(grad.size, "grad");
  uint8_t* out = check_bytes(bits, (grad.size + 7) / 8, "bits");
  float* sc = check_floats(scale, 1, "scale");
  dispatch_grad_residual(grad, residual, [&](auto gtag, auto rtag) {
    using G = typename decltype(gtag)::type;
    using R = typename decltype(rtag)::type;
    DeviceGuard guard(stream);
    const cudaStream_t s = cuda_stream(stream);
    R* r = static_cast<R*>(residual.data);
    const LoadSum<G, R> load{static_cast<const G*>(grad.data), r};
    sign_scale_launch(load, grad.size, scale_kind, sc, s);
    launch_over((grad.size + 7) / 8, [&](unsigned grid) {
      sign_pack_ef_kernel<<<grid, kThreads, 0, s>>>(load, r, grad.size, sc, out);
    });
  });
}

void sign_decompress(const Array& bits, const Array& scale, const Array& out, Stream stream) {
  check_size_fits_int32(out.size, "out");
  const uint8_t* in = check_bytes(bits, (out.size + 7) / 8, "bits");
  const float* sc = check_floats(scale, 1, "scale");
  dispatch_float(out.dtype, "out", [&](auto tag) {
    using T = typename decltype(tag)::type;
    DeviceGuard guard(stream);
    const cudaStream_t s = cuda_stream(stream);
    launch_over(out.size, [&](unsigned grid) {
      sign_decompress_kernel<<<grid, kThreads, 0, s>>>(in, sc, out.size, static_cast<T*>(out.data));
    });
  });
}

void terngrad(const Array& x, uint64_t seed, uint64_t step, const Array& codes, const Array& scale, Stream stream) {
  check_size_fits_int32(x.size, "x");
  uint8_t* out = check_bytes(codes, (x.size + 3) / 4, "codes");
  float* sc = check_floats(scale, 1, "scale");
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    DeviceGuard guard(stream);
    const cudaStream_t s = cuda_stream(stream);
    const LoadX<T> load{static_cast<const T*>(x.data)};
    max_magnitude_launch(load, x.size, sc, s);
    launch_over((x.size + 3) / 4, [&](unsigned grid) {
      terngrad_pack_kernel<<<grid, kThreads, 0, s>>>(load, x.size, sc, seed, step, out);
    });
  });
}

void terngrad_ef(const Array& grad, const Array& residual, uint64_t seed, uint64_t step, const Array& codes,
                 const Array& scale, Stream stream) {
  check_size_fits_int32(grad.size, "grad");
  uint8_t* out = check_bytes(codes, (grad.size + 3) / 4, "codes");
  float* sc = check_floats(scale, 1, "scale");
  dispatch_grad_residual(grad, residual, [&](auto gtag, auto rtag) {
    using G = typename decltype(gtag)::type;
    using R = typename decltype(rtag)::type;
    DeviceGuard guard(stream);
    const cudaStream_t s = cuda_stream(stream);
    R* r = static_cast<R*>(residual.data);
    const LoadSum<G, R> load{static_cast<const G*>(grad.data), r};
    max_magnitude_launch(load, grad.size, sc, s);
    launch_over((grad.size + 3) / 4, [&](unsigned grid) {
      terngrad_pack_ef_kernel<<<grid, kThreads, 0, s>>>(load, r, grad.size, sc, seed, step, out);
    });
  });
}

void terngrad_decompress(const Array& codes, const Array& scale, const Array& out, Stream stream) {
  check_size_fits_int32(out.size, "out");
  const uint8_t* in = check_bytes(codes, (out.size + 3) / 4, "codes");
  const float* sc = check_floats(scale, 1, "scale");
  dispatch_float(out.dtype, "out", [&](auto tag) {
    using T = typename decltype(tag)::type;
    DeviceGuard guard(stream);
    const cudaStream_t s = cuda_stream(stream);
    launch_over(out.size, [&](unsigned grid) {
      terngrad_decompress_kernel<<<grid, kThreads, 0, s>>>(in, sc, out.size, static_cast<T*>(out.data));
    });
  });
}

void qsgd(const Array& x, int64_t levels, int64_t bucket_size, uint64_t seed, uint64_t step, const Array& codes,
          const Array& norms, Stream stream) {
  check_qsgd_params(levels, bucket_size);
  check_size_fits_int32(x.size, "x");
  uint8_t* out = check_bytes(codes, packed_bytes(x.size, qsgd_code_bits(levels)), "codes");
  float* n = check_floats(norms, bucket_count(x.size, bucket_size), "norms");
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    DeviceGuard guard(stream);
    qsgd_launch(LoadX<T>{static_cast<const T*>(x.data)}, x.size, levels, bucket_size, seed, step, out, n,
                static_cast<float*>(nullptr), cuda_stream(stream));
  });
}

void qsgd_ef(const Array& grad, const Array& residual, int64_t levels, int64_t bucket_size, uint64_t seed,
             uint64_t step, const Array& codes, const Array& norms, Stream stream) {
  check_qsgd_params(levels, bucket_size);
  check_size_fits_int32(grad.size, "grad");
  uint8_t* out = check_bytes(codes, packed_bytes(grad.size, qsgd_code_bits(levels)), "codes");
  float* n = check_floats(norms, bucket_count(grad.size, bucket_size), "norms");
  dispatch_grad_residual(grad, residual, [&](auto gtag, auto rtag) {
    using G = typename decltype(gtag)::type;
    using R = typename decltype(rtag)::type;
    DeviceGuard guard(stream);
    R* r = static_cast<R*>(residual.data);
    qsgd_launch(LoadSum<G, R>{static_cast<const G*>(grad.data), r}, grad.size, levels, bucket_size, seed, step, out,
                n, r, cuda_stream(stream));
  });
}

void qsgd_decompress(const Array& codes, const Array& norms, int64_t levels, int64_t bucket_size, const Array& out,
                     Stream stream) {
  check_qsgd_params(levels, bucket_size);
  check_size_fits_int32(out.size, "out");
  const uint8_t* in = check_bytes(codes, packed_bytes(out.size, qsgd_code_bits(levels)), "codes");
  const float* n = check_floats(norms, bucket_count(out.size, bucket_size), "norms");
  dispatch_float(out.dtype, "out", [&](auto tag) {
    using T = typename decltype(tag)::type;
    DeviceGuard guard(stream);
    const cudaStream_t s = cuda_stream(stream);
    launch_over((out.size + 7) / 8, [&](unsigned grid) {
      qsgd_decompress_kernel<<<grid, kThreads, 0, s>>>(in, codes.size, n, levels, bucket_size, out.size,
                                                       static_cast<T*>(out.data));
    });
  });
}

void natural_compress(const Array& x, uint64_t seed, uint64_t step, const Array& codes, Stream stream) {
  check_size_fits_int32(x.size, "x");
  uint8_t* out = check_bytes(codes, x.size, "codes");
  dispatch_float(x.dtype, "x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    DeviceGuard guard(stream);
    const cudaStream_t s = cuda_stream(stream);
    launch_over((x.size + 3) / 4, [&](unsigned grid) {
      natural_kernel<<<grid, kThreads, 0, s>>>(LoadX<T>{static_cast<const T*>(x.data)}, x.size, seed, step, out,
                                               static_cast<float*>(nullptr));
    });
  });
}

void natural_compress_ef(const Array& grad, const Array& residual, uint64_t seed, uint64_t step,
                         const Array& codes, Stream stream) {
  check_size_fits_int32(grad.size, "grad");
  uint8_t* out = check_bytes(codes, grad.size, "codes");
  dispatch_grad_residual(grad, residual, [&](auto gtag, auto rtag) {
    using G = typename decltype(gtag)::type;
    using R = typename decltype(rtag)::type;
    DeviceGuard guard(stream);
    const cudaStream_t s = cuda_stream(stream);
    R* r = static_cast<R*>(residual.data);
    launch_over((grad.size + 3) / 4, [&](unsigned grid) {
      natural_kernel<<<grid, kThreads, 0, s>>>(LoadSum<G, R>{static_cast<const G*>(grad.data), r}, grad.size, seed,
                                               step, out, r);
    });
  });
}

void natural_decompress(const Array& codes, const Array& out, Stream stream) {
  check_size_fits_int32(out.size, "out");
  const uint8_t* in = check_bytes(codes, out.size, "codes");
  dispatch_float(out.dtype, "out", [&](auto tag) {
    using T = typename decltype(tag)::type;
    DeviceGuard guard(stream);
    const cudaStream_t s = cuda_stream(stream);
    launch_over(out.size, [&](unsigned grid) {
      natural_decompress_kernel<<<grid, kThreads, 0, s>>>(in, out.size, static_cast<T*>(out.data));
    });
  });
}

void stochastic_round(const Array& x, uint64_t seed, uint64_t step, const Array& out, Stream stream) {
  check_size_fits_int32(x.size, "x");
  const float* in = x.as<float>("x");
  check(out.size == x.size, "out: expected " + std::to_string(x.size) + " elements, got " + std::to_string(out.size));
  if (out.dtype != DType::bfloat16 && out.dtype != DType::float16)
    throw TypeError(std::string("out: expected bfloat16 or float16, got ") + dtype_name(out.dtype));
  DeviceGuard guard(stream);
  const cudaStream_t s = cuda_stream(stream);
  launch_over((x.size + 3) / 4, [&](unsigned grid) {
    if (out.dtype == DType::bfloat16)
      stochastic_round_kernel<<<grid, kThreads, 0, s>>>(in, x.size, seed, step, static_cast<bfloat16*>(out.data));
    else
      stochastic_round_kernel<<<grid, kThreads, 0, s>>>(in, x.size, seed, step, static_cast<float16*>(out.data));
  });
}

}  // namespace ck::CK_BACKEND
