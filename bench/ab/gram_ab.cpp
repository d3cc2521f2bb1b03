// In-process A/B of the CPU Gram route (scripts/ab-gram.sh builds it): csrc/aggregate/gram_cpu.cpp of two
// revisions compiled into namespaces ck::before and ck::after of one binary, called alternately on the
// same rows, best of 7 each. On a machine whose speed drifts between runs (this VM: ~10%), alternating
// calls in one process is what separates a change from the drift. Also checks the outputs bit for bit.
//   gram_ab n d [bf16] [nan]    environment: R (combine's output rows, default n), CENTER (mean|zero),
//                               WEIGHTS=uniform (NNM-like rows instead of normal weights)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "aggregate/gram.h"

namespace ck::before {
void gram(const Rows&, GramCenter, const Array&, const Array&, Stream);
void combine(const Rows&, const Array&, int64_t, const Array&, Stream);
}  // namespace ck::before
namespace ck::after {
void gram(const Rows&, GramCenter, const Array&, const Array&, Stream);
void combine(const Rows&, const Array&, int64_t, const Array&, Stream);
}  // namespace ck::after

using namespace ck;

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s n d [bf16] [nan]\n", argv[0]);
    return 2;
  }
  const int64_t n = std::atol(argv[1]), d = std::atol(argv[2]);
  const bool bf16 = argc > 3 && std::string(argv[3]) == "bf16";
  const bool nan = argc > 4 && std::string(argv[4]) == "nan";
  const int64_t r = std::getenv("R") ? std::atol(std::getenv("R")) : n;
  const GramCenter center = std::getenv("CENTER") && std::string(std::getenv("CENTER")) == "zero"
                                ? GramCenter::zero : GramCenter::mean;
  const size_t elem = bf16 ? 2 : 4;
  const DType dtype = bf16 ? DType::bfloat16 : DType::float32;

  // n separately allocated rows (as a list input), normal values, a few NaN/Inf entries on request
  std::mt19937 gen(1);
  std::normal_distribution<float> normal;
  std::vector<std::vector<char>> data(size_t(n), std::vector<char>(size_t(d) * elem + 64));
  Rows rows;
  rows.n = n, rows.d = d, rows.dtype = dtype;
  for (auto& row : data) {
    char* p = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(row.data()) + 63) & ~uintptr_t(63));
    for (int64_t j = 0; j < d; ++j) {
      float v = normal(gen);
      if (nan && gen() % 100000 == 0) v = gen() % 2 ? NAN : INFINITY;
      uint32_t bits;
      std::memcpy(&bits, &v, 4);
      if (bf16) reinterpret_cast<uint16_t*>(p)[j] = uint16_t(bits >> 16);
      else reinterpret_cast<float*>(p)[j] = v;
    }
    rows.ptr.push_back(p);
  }
  std::vector<double> W(size_t(r * n)), G[2] = {std::vector<double>(size_t(n * n)), std::vector<double>(size_t(n * n))};
  // a quarter zero (the masked path too); WEIGHTS=uniform: NNM's rows, 1 / (n - f) on n - f workers
  const bool uniform = std::getenv("WEIGHTS") && std::string(std::getenv("WEIGHTS")) == "uniform";
  for (int64_t o = 0; o < r; ++o)
    for (int64_t i = 0; i < n; ++i)
      W[size_t(o * n + i)] = uniform ? ((i + o) % 8 ? 1.0 / double(n - (n + 7) / 8) : 0.0)
                                     : (gen() % 4 ? normal(gen) : 0.0);
  // outputs 64-byte aligned, as torch allocates them
  std::vector<char> out_mem[2] = {std::vector<char>(size_t(r * d) * elem + 64), std::vector<char>(size_t(r * d) * elem + 64)};
  char* out[2];
  for (int v = 0; v < 2; ++v)
    out[v] = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(out_mem[v].data()) + 63) & ~uintptr_t(63));
  const size_t out_bytes = size_t(r * d) * elem;
  const Array none{}, weights{W.data(), r * n, DType::float64};

  double t[4] = {1e9, 1e9, 1e9, 1e9};
  for (int rep = 0; rep < 7; ++rep)
    for (int v = 0; v < 2; ++v) {
      const Array g{G[v].data(), n * n, DType::float64}, o{out[v], r * d, dtype};
      double s = now();
      (v ? after::gram : before::gram)(rows, center, none, g, Stream{});
      t[v] = std::min(t[v], now() - s);
      s = now();
      (v ? after::combine : before::combine)(rows, weights, r, o, Stream{});
      t[2 + v] = std::min(t[2 + v], now() - s);
    }
  const bool same_g = std::memcmp(G[0].data(), G[1].data(), G[0].size() * 8) == 0;
  const bool same_out = std::memcmp(out[0], out[1], out_bytes) == 0;
  if (!same_out) {  // a change of arithmetic (e.g. the AMX route): how far apart, in units of the dtype
    auto value = [&](int v, size_t k) {
      if (!bf16) return double(reinterpret_cast<const float*>(out[v])[k]);
      const uint32_t bits = uint32_t(reinterpret_cast<const uint16_t*>(out[v])[k]) << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return double(f);
    };
    size_t differ = 0;
    double worst = 0;
    for (size_t k = 0; k < size_t(r * d); ++k) {
      const double a = value(0, k), b = value(1, k);
      if (a == b || (std::isnan(a) && std::isnan(b))) continue;
      ++differ;
      worst = std::max(worst, std::fabs(a - b) / std::max(std::fabs(a), std::fabs(b)));
    }
    std::printf("combine outputs: %zu of %lld differ, worst relative difference %.3g\n", differ, (long long)(r * d),
                worst);
  }
  std::printf("n=%lld d=%lld %s r=%lld: gram %.3f -> %.3f ms (%s)  combine %.3f -> %.3f ms (%s)\n", (long long)n,
              (long long)d, bf16 ? "bf16" : "f32", (long long)r, t[0] * 1e3, t[1] * 1e3, same_g ? "same bits" : "DIFFERENT",
              t[2] * 1e3, t[3] * 1e3, same_out ? "same bits" : "DIFFERENT");
  return same_g && same_out ? 0 : 1;
}
