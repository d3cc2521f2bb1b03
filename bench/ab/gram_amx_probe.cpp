// Measurement probe for a planned AMX path of the CPU Gram (not part of the package; see bench/README,
// "Results: fourth session"): the centered Gram of 64 float32 rows (a common component of 30 sigma, as
// model updates have) formed with AMX TDPBF16PS on a "bf16x3" split (x - c = h + m + l, three bfloat16
// parts, 24 bits; the six part-products hh, hm, mh, hl, lh, mm), against a float64 reference. Prints the
// time on one core (the fill, split and pair transpose here are scalar and unoptimised: the AMX part
// alone is shown too) and the worst error relative to |x_i - c| |x_k - c| (the float32 route's scale).
//   g++ -O3 -march=sapphirerapids -mamx-tile -mamx-bf16 bench/ab/gram_amx_probe.cpp -o /tmp/probe
//   /tmp/probe 100000
// Measured here (2026-11-27): d = 1e5, 16.8 ms in all, 5.8 ms the AMX part with its per-product flushes;
// worst relative error 2.6e-8 (2^-24 = 6.0e-8).
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>
struct TileConfig { uint8_t palette, start; uint8_t pad[14]; uint16_t colsb[16]; uint8_t rows[16]; };
static inline uint16_t bf16_rne(float f) { uint32_t u; memcpy(&u, &f, 4); u += 0x7fff + ((u >> 16) & 1); return uint16_t(u >> 16); }
static inline float from_bf16(uint16_t h) { uint32_t u = uint32_t(h) << 16; float f; memcpy(&f, &u, 4); return f; }
int main(int argc, char** argv) {
  const int m = 64; const long d = argc > 1 ? atol(argv[1]) : 1000000; const int K = 256;  // coordinates per block
  if (syscall(SYS_arch_prctl, 0x1023, 18)) return 1;
  std::mt19937 g(1); std::normal_distribution<float> nd;
  std::vector<float> X(size_t(m) * d); std::vector<float> common(d);
  for (auto& c : common) c = 30.f * nd(g);
  for (int i = 0; i < m; ++i) for (long j = 0; j < d; ++j) X[size_t(i) * d + j] = common[j] + nd(g);
  TileConfig cfg{}; cfg.palette = 1;
  for (int t = 0; t < 8; ++t) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }
  _tile_loadconfig(&cfg);
  // parts[p][row][K] bf16; Bt[p][rowblock][K/2][16][2] (pairs, transposed by 32-bit elements)
  std::vector<uint16_t> parts(3 * m * K), Bt(3 * m * K);
  std::vector<double> G(m * m, 0.0);
  alignas(64) float C[16 * 16];
  const int P[6][2] = {{0, 0}, {0, 1}, {1, 0}, {0, 2}, {2, 0}, {1, 1}};
  auto t0 = std::chrono::steady_clock::now();
  std::vector<float> S(m * K), c(K);
  double t_amx = 0;
  for (long j0 = 0; j0 < d; j0 += K) {
    const int len = int(std::min<long>(K, d - j0));
    for (int j = 0; j < K; ++j) { double s = 0; if (j < len) for (int i = 0; i < m; ++i) s += X[size_t(i) * d + j0 + j]; c[j] = float(s / m); }
    for (int i = 0; i < m; ++i) for (int j = 0; j < K; ++j) {
      float v = j < len ? X[size_t(i) * d + j0 + j] - c[j] : 0.f;
      uint16_t h = bf16_rne(v); float r1 = v - from_bf16(h); uint16_t mm = bf16_rne(r1); float r2 = r1 - from_bf16(mm); uint16_t l = bf16_rne(r2);
      parts[(0 * m + i) * K + j] = h; parts[(1 * m + i) * K + j] = mm; parts[(2 * m + i) * K + j] = l;
    }
    // B layout: for part p, row block rb (16 rows), Bt[p][rb][kk][n][2] = parts[p][rb*16+n][2kk + 0/1]
    for (int p = 0; p < 3; ++p) for (int rb = 0; rb < m / 16; ++rb) for (int kk = 0; kk < K / 2; ++kk) for (int n = 0; n < 16; ++n) {
      uint16_t* dst = &Bt[((size_t(p) * (m / 16) + rb) * (K / 2) + kk) * 32 + n * 2];
      const uint16_t* src = &parts[(size_t(p) * m + rb * 16 + n) * K + 2 * kk];
      dst[0] = src[0]; dst[1] = src[1];
    }
    auto ta = std::chrono::steady_clock::now();
    for (int ib = 0; ib < m / 16; ++ib) for (int kb = ib; kb < m / 16; ++kb) {
      for (int q = 0; q < 6; ++q) {
        _tile_zero(0);
        const int pa = P[q][0], pb = P[q][1];
        for (int k0 = 0; k0 < K; k0 += 32) {
          _tile_loadd(1, &parts[(size_t(pa) * m + ib * 16) * K + k0], K * 2);
          _tile_loadd(2, &Bt[((size_t(pb) * (m / 16) + kb) * (K / 2) + k0 / 2) * 32], 64);
          _tile_dpbf16ps(0, 1, 2);
        }
        _tile_stored(0, C, 64);
        for (int a = 0; a < 16; ++a) for (int b = 0; b < 16; ++b) G[(ib * 16 + a) * m + kb * 16 + b] += C[a * 16 + b];
      }
    }
    t_amx += std::chrono::duration<double>(std::chrono::steady_clock::now() - ta).count();
  }
  double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  _tile_release();
  // symmetric fill; the (p,q) products with p != q are added for both (i,k) orders by the pairs list
  for (int i = 0; i < m; ++i) for (int k = 0; k < i; ++k) G[i * m + k] = G[k * m + i];
  // reference in double
  std::vector<double> mu(d, 0.0);
  for (int i = 0; i < m; ++i) for (long j = 0; j < d; ++j) mu[j] += X[size_t(i) * d + j];
  for (auto& v : mu) v /= m;
  double worst = 0; double worst_rel_scale = 0;
  std::vector<double> nrm(m, 0.0);
  for (int i = 0; i < m; ++i) for (long j = 0; j < d; ++j) { double v = X[size_t(i) * d + j] - mu[j]; nrm[i] += v * v; }
  for (int i = 0; i < m; i += 7) for (int k = i; k < m; k += 5) {
    double r = 0; for (long j = 0; j < d; ++j) r += (X[size_t(i) * d + j] - mu[j]) * (X[size_t(k) * d + j] - mu[j]);
    double err = std::fabs(G[i * m + k] - r), scale = std::sqrt(nrm[i] * nrm[k]);
    worst = std::max(worst, err / scale);
  }
  printf("amx+flush part %.2f ms; ", t_amx * 1e3); printf("d=%ld: %.1f ms (one core, prototype incl. fill+split+transpose), worst |G - ref| / (|xi - c||xk - c|) = %.3g (2^-24 = %.3g)\n",
         d, t * 1e3, worst, std::ldexp(1.0, -24));
}
