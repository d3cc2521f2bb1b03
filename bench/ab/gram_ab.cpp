// In-process A/B of the CPU Gram route (scripts/ab-gram.sh builds it): csrc/aggregate/gram_cpu.cpp of two
// revisions compiled into namespaces ck::before and ck::after of one binary, called alternately on the
// same rows, best of 7 each. On a machine whose speed drifts between runs (this VM: ~10%), alternating
// calls in one process is what separates a change from the drift. Also checks the outputs bit for bit.
//   gram_ab n d [bf16] [nan]    environment: R (combine's output rows, default n), CENTER (mean|zero)
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
  for (auto& w : W) w = gen() % 4 ? normal(gen) : 0.0;  // a quarter zero: the masked path too
  std::vector<char> out[2] = {std::vector<char>(size_t(r * d) * elem), std::vector<char>(size_t(r * d) * elem)};
  const Array none{}, weights{W.data(), r * n, DType::float64};

  double t[4] = {1e9, 1e9, 1e9, 1e9};
  for (int rep = 0; rep < 7; ++rep)
    for (int v = 0; v < 2; ++v) {
      const Array g{G[v].data(), n * n, DType::float64}, o{out[v].data(), r * d, dtype};
      double s = now();
      (v ? after::gram : before::gram)(rows, center, none, g, Stream{});
      t[v] = std::min(t[v], now() - s);
      s = now();
      (v ? after::combine : before::combine)(rows, weights, r, o, Stream{});
      t[2 + v] = std::min(t[2 + v], now() - s);
    }
  const bool same_g = std::memcmp(G[0].data(), G[1].data(), G[0].size() * 8) == 0;
  const bool same_out = std::memcmp(out[0].data(), out[1].data(), out[0].size()) == 0;
  std::printf("n=%lld d=%lld %s r=%lld: gram %.3f -> %.3f ms (%s)  combine %.3f -> %.3f ms (%s)\n", (long long)n,
              (long long)d, bf16 ? "bf16" : "f32", (long long)r, t[0] * 1e3, t[1] * 1e3, same_g ? "same bits" : "DIFFERENT",
              t[2] * 1e3, t[3] * 1e3, same_out ? "same bits" : "DIFFERENT");
  return same_g && same_out ? 0 : 1;
}
