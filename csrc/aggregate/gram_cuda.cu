// gram and combine on the GPU (gram.h). Deterministic without atomics:
//   center (mode "mean"): one thread per coordinate, the finite entries summed in row order;
//   gram: rows in groups of 32; a block owns one (group, group) pair and one chunk of coordinates (chunk
//     boundaries depend on d only), stages 32 coordinates x 64 rows (centered, acc_t) in shared memory and
//     gives each thread 4 of the 32 x 32 products; the products are summed in acc_t over sub-blocks of
//     4096 coordinates, in float64 across sub-blocks, and the per-chunk partials are added in chunk order
//     by a second kernel;
//   combine: one thread per (output row, coordinate), the workers added in index order.
// G comes back to the host (the host algorithms need it): the call waits for the stream.
#include <algorithm>
#include <vector>

#include "../common/cuda_utils.cuh"
#include "gram.h"
#include "rows_cuda.cuh"

namespace ck::CK_BACKEND {
namespace {

constexpr int kGroup = 32;         // rows per group
constexpr int kCols = 32;          // coordinates staged per step
constexpr int kThreads = 256;      // 32 x 32 products / 256 threads = 4 each
constexpr int kPer = kGroup * kGroup / kThreads;
constexpr int64_t kSub = 4096;     // coordinates per acc_t sub-block
constexpr int64_t kMaxChunks = 256;

template <class T>
__global__ void center_kernel(RowView<T> rows, acc_t<T>* center) {
  using A = acc_t<T>;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < rows.d; j += int64_t(gridDim.x) * blockDim.x) {
    A sum = A(0), count = A(0);
    for (int64_t i = 0; i < rows.n; ++i) {
      const A v = to_acc(rows.row(i)[j]);
      if (is_finite_value(v)) {
        sum += v;
        count += A(1);
      }
    }
    center[j] = count > A(0) ? sum / count : A(0);
  }
}

template <class T>
__global__ void vector_center_kernel(const T* c, int64_t d, acc_t<T>* center) {
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < d; j += int64_t(gridDim.x) * blockDim.x)
    center[j] = to_acc(c[j]);
}

// partial[chunk][pair][kGroup * kGroup] for the group pairs (gi <= gk) listed in `pairs`.
template <class T>
__global__ void gram_partial_kernel(RowView<T> rows, const acc_t<T>* center, const int2* pairs, int64_t chunks,
                                    double* partial) {
  using A = acc_t<T>;
  __shared__ A tile[2 * kGroup][kCols + 1];
  const int64_t chunk = blockIdx.x;
  const int2 gp = pairs[blockIdx.y];
  const int64_t d = rows.d, m = rows.n;
  const int64_t j_begin = d / chunks * chunk + min(chunk, d % chunks);
  const int64_t j_end = d / chunks * (chunk + 1) + min(chunk + 1, d % chunks);
  A acc[kPer];
  double total[kPer];
  for (int p = 0; p < kPer; ++p) total[p] = 0.0;
  for (int64_t s0 = j_begin; s0 < j_end; s0 += kSub) {
    const int64_t s1 = min(j_end, s0 + kSub);
    for (int p = 0; p < kPer; ++p) acc[p] = A(0);
    for (int64_t j0 = s0; j0 < s1; j0 += kCols) {
      for (int e = threadIdx.x; e < 2 * kGroup * kCols; e += kThreads) {
        const int r = e / kCols, c = e % kCols;
        const int64_t row = int64_t(r < kGroup ? gp.x : gp.y) * kGroup + (r % kGroup);
        const int64_t j = j0 + c;
        A v = A(0);
        if (row < m && j < s1) v = to_acc(rows.row(row)[j]) - (center ? center[j] : A(0));
        tile[r][c] = v;
      }
      __syncthreads();
      for (int p = 0; p < kPer; ++p) {
        const int q = threadIdx.x + p * kThreads;
        const int a = q / kGroup, b = q % kGroup;
        A sum = A(0);
        for (int c = 0; c < kCols; ++c) sum += tile[a][c] * tile[kGroup + b][c];
        acc[p] += sum;
      }
      __syncthreads();
    }
    for (int p = 0; p < kPer; ++p) total[p] += double(acc[p]);
  }
  double* out = partial + (chunk * int64_t(gridDim.y) + blockIdx.y) * (kGroup * kGroup);
  for (int p = 0; p < kPer; ++p) out[threadIdx.x + p * kThreads] = total[p];
}

__global__ void gram_reduce_kernel(const double* partial, const int2* pairs, int npairs, int64_t chunks, int64_t m,
                                   double* G) {
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= int64_t(npairs) * kGroup * kGroup) return;
  const int pr = int(e / (kGroup * kGroup)), q = int(e % (kGroup * kGroup));
  const int64_t i = int64_t(pairs[pr].x) * kGroup + q / kGroup, k = int64_t(pairs[pr].y) * kGroup + q % kGroup;
  if (i >= m || k >= m || (pairs[pr].x == pairs[pr].y && k < i)) return;
  double sum = 0.0;
  for (int64_t c = 0; c < chunks; ++c) sum += partial[(c * npairs + pr) * (kGroup * kGroup) + q];
  G[i * m + k] = sum;
  G[k * m + i] = sum;
}

template <class T>
__global__ void combine_kernel(RowView<T> rows, const double* W, int64_t r, T* out) {
  using A = acc_t<T>;
  const int64_t d = rows.d, total = r * d;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t q = e / d, j = e % d;
    A acc = A(0);
    for (int64_t i = 0; i < rows.n; ++i) {
      const double w = W[q * rows.n + i];
      if (w != 0.0) acc += A(w) * to_acc(rows.row(i)[j]);
    }
    out[e] = from_acc<T>(acc);
  }
}

}  // namespace

void gram(const Rows& rows, GramCenter mode, const Array& center, const Array& G, Stream stream) {
  check_gram_args(rows, mode, center, G);
  double* host_G = static_cast<double*>(G.data);
  const int64_t m = rows.n, d = rows.d;
  if (d == 0) {
    std::fill(host_G, host_G + m * m, 0.0);
    return;
  }
  DeviceGuard guard(stream);
  const cudaStream_t s = cuda_stream(stream);
  dispatch_float(rows.dtype, "X", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const DeviceRows dev(rows, s);
    const RowView<T> view = dev.view<T>();
    DeviceBuffer<A> c(mode == GramCenter::zero ? 1 : size_t(d), s);
    if (mode == GramCenter::mean) {
      center_kernel<T><<<grid_for(d, 256), 256, 0, s>>>(view, c.get());
    } else if (mode == GramCenter::vector) {
      vector_center_kernel<T><<<grid_for(d, 256), 256, 0, s>>>(static_cast<const T*>(center.data), d, c.get());
    }
    check_launch();
    const int groups = int((m + kGroup - 1) / kGroup);
    std::vector<int2> pairs;
    for (int a = 0; a < groups; ++a)
      for (int b = a; b < groups; ++b) pairs.push_back(make_int2(a, b));
    const int npairs = int(pairs.size());
    check(npairs <= 65535, "X: too many rows for the CUDA gram");
    DeviceBuffer<int2> dev_pairs(pairs.size(), s);
    CK_CUDA_CHECK(cudaMemcpyAsync(dev_pairs.get(), pairs.data(), pairs.size() * sizeof(int2), cudaMemcpyHostToDevice,
                                  s));
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(kMaxChunks, (d + kSub - 1) / kSub));
    DeviceBuffer<double> partial(size_t(chunks * npairs * kGroup * kGroup), s);
    gram_partial_kernel<T><<<dim3(unsigned(chunks), unsigned(npairs)), kThreads, 0, s>>>(
        view, mode == GramCenter::zero ? nullptr : c.get(), dev_pairs.get(), chunks, partial.get());
    check_launch();
    DeviceBuffer<double> dev_G(size_t(m * m), s);
    const int64_t entries = int64_t(npairs) * kGroup * kGroup;
    gram_reduce_kernel<<<unsigned((entries + 255) / 256), 256, 0, s>>>(partial.get(), dev_pairs.get(), npairs, chunks,
                                                                       m, dev_G.get());
    check_launch();
    CK_CUDA_CHECK(cudaMemcpyAsync(host_G, dev_G.get(), size_t(m * m) * sizeof(double), cudaMemcpyDeviceToHost, s));
    CK_CUDA_CHECK(cudaStreamSynchronize(s));
  });
}

void combine(const Rows& rows, const Array& W, int64_t r, const Array& out, Stream stream) {
  check_combine_args(rows, W, r, out);
  if (r * rows.d == 0) return;
  DeviceGuard guard(stream);
  const cudaStream_t s = cuda_stream(stream);
  dispatch_float(rows.dtype, "X", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const DeviceRows dev(rows, s);
    DeviceBuffer<double> dev_W(size_t(W.size), s);
    // W is host memory: a pageable copy returns once staged, so the caller's array may go away after this
    CK_CUDA_CHECK(cudaMemcpyAsync(dev_W.get(), W.data, size_t(W.size) * sizeof(double), cudaMemcpyHostToDevice, s));
    combine_kernel<T><<<grid_for(r * rows.d, 256), 256, 0, s>>>(dev.view<T>(), dev_W.get(), r,
                                                                 static_cast<T*>(out.data));
    check_launch();
  });
}

}  // namespace ck::CK_BACKEND
