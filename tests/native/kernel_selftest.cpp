// Standalone check of every kernel implementation this CPU can run against the scalar
// reference, bit for bit, for every tile size and both layouts. Built and run by
// tests/test_kernels_native.py natively and, where a cross compiler and qemu-user exist, for
// AArch64 (the NEON path) under emulation.
//
//   g++ -O2 -std=c++17 -Icsrc tests/native/kernel_selftest.cpp csrc/kernels/*.cpp -lpthread
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/attention.h"
#include "kernels/ternary.h"

using namespace bitnet::kernels;

namespace {

// IEEE half -> float, written here (not the library's fp16.h): normals, subnormals, zero.
double half_to_double(uint16_t h) {
  const int sign = h >> 15, exponent = (h >> 10) & 31, mantissa = h & 1023;
  const double v = exponent == 0 ? std::ldexp(mantissa, -24) : std::ldexp(1024 + mantissa, exponent - 25);
  return sign ? -v : v;
}

// Attention in double precision: out_j = sum_c softmax(scale * q_j . k_c) v_c.
void attend_reference(const AttentionShape& s, const float* q, const uint16_t* k, const uint16_t* v, int64_t n_kv,
                      int kv_head, double* out) {
  const int g = s.n_head / s.n_head_kv, hd = s.head_dim;
  const int64_t off = static_cast<int64_t>(kv_head) * hd;
  std::vector<double> p(n_kv);
  for (int j = 0; j < g; ++j) {
    double max = -1e300;
    for (int64_t c = 0; c < n_kv; ++c) {
      double dot = 0;
      for (int d = 0; d < hd; ++d) dot += double(q[j * hd + d]) * half_to_double(k[c * s.cell_stride + off + d]);
      p[c] = dot * s.scale;
      max = std::max(max, p[c]);
    }
    double sum = 0;
    for (int64_t c = 0; c < n_kv; ++c) sum += (p[c] = std::exp(p[c] - max));
    for (int d = 0; d < hd; ++d) {
      double acc = 0;
      for (int64_t c = 0; c < n_kv; ++c) acc += p[c] * half_to_double(v[c * s.cell_stride + off + d]);
      out[j * hd + d] = acc / sum;
    }
  }
}

// attend() (the SIMD path this CPU runs for the shape) and attend_scalar against the reference:
// head dims that take the 16-lane, 8-lane and scalar paths, 1-5 query heads per kv head, one
// cell to a few hundred, scores large enough that the softmax is peaked.
int check_attention(std::mt19937& rng, int& checked) {
  int failures = 0;
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  for (int hd : {128, 64, 72, 20}) {
    for (int g : {1, 4, 5}) {
      for (int64_t n_kv : {1, 7, 33, 300}) {
        AttentionShape s;
        s.n_head_kv = 2;
        s.n_head = 2 * g;
        s.head_dim = hd;
        s.cell_stride = static_cast<int64_t>(s.n_head_kv) * hd;
        s.scale = 1.0f / std::sqrt(float(hd)) * (n_kv == 33 ? 8.0f : 1.0f);
        std::vector<uint16_t> k(n_kv * s.cell_stride), v(k.size());
        for (auto* cache : {&k, &v}) {
          for (auto& h : *cache) {  // halves in [-2, 2): sign, exponent 13..15 (0.25..2), mantissa
            h = static_cast<uint16_t>(((rng() & 1) << 15) | ((13 + rng() % 3) << 10) | (rng() & 1023));
          }
        }
        std::vector<float> q(g * hd), out(g * hd), out_scalar(g * hd), scratch(n_kv * g);
        for (auto& x : q) x = unit(rng);
        std::vector<double> want(g * hd);
        const int kv_head = 1;
        attend_reference(s, q.data(), k.data(), v.data(), n_kv, kv_head, want.data());
        attend(s, q.data(), k.data(), v.data(), n_kv, kv_head, out.data(), scratch.data());
        attend_scalar(s, q.data(), k.data(), v.data(), n_kv, kv_head, out_scalar.data(), scratch.data());
        double worst = 0, worst_scalar = 0;
        for (size_t i = 0; i < want.size(); ++i) {
          worst = std::max(worst, std::fabs(out[i] - want[i]));
          worst_scalar = std::max(worst_scalar, std::fabs(out_scalar[i] - want[i]));
        }
        ++checked;
        if (worst > 1e-4 || worst_scalar > 1e-4) {
          ++failures;
          std::printf("MISMATCH attention %s hd=%d g=%d n_kv=%ld: max |d| %.3g (scalar %.3g)\n", attention_impl(), hd,
                      g, static_cast<long>(n_kv), worst, worst_scalar);
        }
      }
    }
  }
  return failures;
}

}  // namespace

int main() {
  std::mt19937 rng(42);
  const Impl* impls[] = {avx2_impl(), avx512vnni_impl(), amx_impl(), neon_impl()};
  int checked = 0, failures = 0;
  for (const Impl* impl : impls) {
    if (impl == nullptr) continue;
    for (Layout layout : {Layout::kI2S, Layout::kTQ2}) {
      for (int64_t k : {256, 512, 2560, 4352}) {
        for (int pattern = 0; pattern < 3; ++pattern) {  // random, all codes 2 (+1), extremes
          const int64_t rb = row_bytes(layout, k);
          std::vector<uint8_t> w(kMaxRows * rb);
          for (auto& b : w) b = pattern == 1 ? 0xAA : static_cast<uint8_t>(rng());
          std::vector<int8_t> x(kMaxTokens * (k + 64));
          for (auto& v : x) v = pattern == 2 ? (rng() & 1 ? 127 : -127) : static_cast<int8_t>(rng() % 255 - 127);
          for (int nr = 1; nr <= kMaxRows; ++nr) {
            for (int nt = 1; nt <= kMaxTokens; ++nt) {
              int32_t want[kMaxRows * kMaxTokens], got[kMaxRows * kMaxTokens];
              scalar_impl().tile(layout, w.data(), rb, nr, x.data(), k + 64, nt, k, want);
              impl->tile(layout, w.data(), rb, nr, x.data(), k + 64, nt, k, got);
              ++checked;
              if (std::memcmp(want, got, sizeof(int32_t) * nr * nt) != 0) {
                ++failures;
                std::printf("MISMATCH %s layout=%d k=%ld pattern=%d tile=%dx%d\n", impl->name,
                            static_cast<int>(layout), static_cast<long>(k), pattern, nr, nt);
              }
            }
          }
        }
      }
    }
  }
  // Kernels over unpacked codes (the batch path): unpack_codes + unpacked_tile equals the scalar
  // tile over the packed codes, for chunks up to kUnpackedMaxK.
  const Impl* with_unpacked[] = {&scalar_impl(), avx2_impl(), avx512vnni_impl(), neon_impl()};
  for (const Impl* impl : with_unpacked) {
    if (impl == nullptr || impl->unpacked_tile == nullptr) continue;
    for (Layout layout : {Layout::kI2S, Layout::kTQ2}) {
      for (int64_t k : {256, 768, 2048}) {
        for (int pattern = 0; pattern < 3; ++pattern) {
          const int64_t rb = row_bytes(layout, k);
          std::vector<uint8_t> w(kMaxRows * rb);
          for (auto& b : w) b = pattern == 1 ? 0xAA : static_cast<uint8_t>(rng());
          std::vector<int8_t> x(kMaxTokens * (k + 64));
          for (auto& v : x) v = pattern == 2 ? (rng() & 1 ? 127 : -128) : static_cast<int8_t>(rng() % 256 - 128);
          std::vector<uint8_t> codes(kMaxRows * k);
          for (int r = 0; r < kMaxRows; ++r) unpack_codes(layout, w.data() + r * rb, 0, k / kGroup, codes.data() + r * k);
          for (int nr = 1; nr <= kMaxRows; ++nr) {
            for (int nt = 1; nt <= kMaxTokens; ++nt) {
              int32_t want[kMaxRows * kMaxTokens], acc[kMaxTokens * 5], got[kMaxRows * kMaxTokens];
              scalar_impl().tile(layout, w.data(), rb, nr, x.data(), k + 64, nt, k, want);
              for (int i = 0; i < kMaxTokens * 5; ++i) acc[i] = 1000;  // the kernel adds to what is there
              impl->unpacked_tile(codes.data(), k, nr, x.data(), k + 64, nt, k, acc, 5);  // token-major, stride 5
              bool untouched = true;
              for (int t = 0; t < kMaxTokens; ++t) {
                for (int r = 0; r < 5; ++r) {
                  if (t < nt && r < nr) {
                    got[r * nt + t] = acc[t * 5 + r] - 1000;
                  } else {
                    untouched = untouched && acc[t * 5 + r] == 1000;
                  }
                }
              }
              ++checked;
              if (!untouched || std::memcmp(want, got, sizeof(int32_t) * nr * nt) != 0) {
                ++failures;
                std::printf("MISMATCH unpacked %s layout=%d k=%ld pattern=%d tile=%dx%d\n", impl->name,
                            static_cast<int>(layout), static_cast<long>(k), pattern, nr, nt);
              }
            }
          }
        }
      }
    }
  }
  // One-token kernels over runs of rows: every row equals the scalar tile, for run lengths around
  // the 8-row reductions, k with an odd number of I2_S groups, and rows not 32-byte aligned.
  for (const Impl* impl : impls) {
    if (impl == nullptr || impl->gemv == nullptr) continue;
    for (Layout layout : {Layout::kI2S, Layout::kTQ2}) {
      for (int64_t k : {256, 384, 2560, 6912}) {
        if (layout == Layout::kTQ2 && k % kTq2Block != 0) continue;
        for (int pattern = 0; pattern < 3; ++pattern) {
          const int64_t rb = row_bytes(layout, k), n_rows = 21;
          std::vector<uint8_t> w(n_rows * rb + 8);
          for (auto& b : w) b = pattern == 1 ? 0xAA : static_cast<uint8_t>(rng());
          std::vector<int8_t> x(k);
          for (auto& v : x) v = pattern == 2 ? (rng() & 1 ? 127 : -127) : static_cast<int8_t>(rng() % 255 - 127);
          for (int64_t offset : {0, 4}) {
            for (int64_t nr : {1, 7, 8, 9, 16, 21}) {
              std::vector<int32_t> want(nr), got(nr + 1, -1);
              for (int64_t r = 0; r < nr; ++r) {
                scalar_impl().tile(layout, w.data() + offset + r * rb, rb, 1, x.data(), k, 1, k, &want[r]);
              }
              impl->gemv(layout, w.data() + offset, rb, nr, x.data(), k, got.data());
              ++checked;
              if (std::memcmp(want.data(), got.data(), sizeof(int32_t) * nr) != 0 || got[nr] != -1) {
                ++failures;
                std::printf("MISMATCH gemv %s layout=%d k=%ld pattern=%d rows=%ld offset=%ld\n", impl->name,
                            static_cast<int>(layout), static_cast<long>(k), pattern, static_cast<long>(nr),
                            static_cast<long>(offset));
              }
            }
          }
        }
      }
    }
  }
  // Whole row ranges (AMX tiles, where the CPU has them): equal to the scalar driver, for row
  // counts around the 32-row blocks and token counts around the 32-token blocks.
  for (const Impl* impl : impls) {
    if (impl == nullptr || impl->rows == nullptr) continue;
    for (Layout layout : {Layout::kI2S, Layout::kTQ2}) {
      for (int64_t k : {256, 2560}) {
        const int64_t rb = row_bytes(layout, k), xs = k + 8;
        for (int64_t n_rows : {7, 32, 45}) {
          std::vector<uint8_t> w(n_rows * rb);
          for (auto& b : w) b = static_cast<uint8_t>(rng());
          if (layout == Layout::kTQ2) {
            for (int64_t r = 0; r < n_rows; ++r) {
              for (int64_t blk = 0; blk < k / kTq2Block; ++blk) {
                w[r * rb + blk * kTq2BlockBytes + 64] = 0x00;
                w[r * rb + blk * kTq2BlockBytes + 65] = 0x3C;  // fp16 1.0
              }
            }
          }
          for (int64_t n : {17, 32, 50}) {
            std::vector<int8_t> q(n * xs);
            for (auto& v : q) v = static_cast<int8_t>(rng() % 255 - 127);
            std::vector<float> scale(n, 0.25f);
            std::vector<int32_t> sum(n);
            for (int64_t t = 0; t < n; ++t) {
              for (int64_t i = 0; i < k; ++i) sum[t] += q[t * xs + i];
            }
            const TernaryMatrix m{layout, w.data(), n_rows, k, rb, 0.5f};
            const QuantizedActivations x{q.data(), xs, scale.data(), sum.data(), n};
            std::vector<float> want(n * n_rows), got(n * n_rows, -1.0f);
            gemm_rows(scalar_impl(), m, 0, n_rows, x, want.data(), n_rows, BatchPath::kPacked);
            // Natural order in: the driver reorders a copy (to_tile_order) for the tile kernel.
            gemm_rows(*impl, m, 0, n_rows, x, got.data(), n_rows, BatchPath::kRows);
            // Tile order in (reordered here by hand), on a path that reads natural order.
            std::vector<int8_t> qt(q.size());
            for (int64_t t = 0; t < n; ++t) {
              for (int64_t p = 0; p < k; ++p) qt[t * xs + p] = q[t * xs + p / 128 * 128 + 32 * (p % 4) + p % 128 / 4];
            }
            const QuantizedActivations xt{qt.data(), xs, scale.data(), sum.data(), n, true};
            std::vector<float> got_back(n * n_rows, -1.0f);
            gemm_rows(scalar_impl(), m, 0, n_rows, xt, got_back.data(), n_rows, BatchPath::kPacked);
            ++checked;
            if (want != got || want != got_back) {
              ++failures;
              std::printf("MISMATCH rows %s layout=%d k=%ld rows=%ld tokens=%ld\n", impl->name,
                          static_cast<int>(layout), static_cast<long>(k), static_cast<long>(n_rows),
                          static_cast<long>(n));
            }
          }
        }
      }
    }
  }
  // Activation quantization: the dispatched routine equals the scalar one.
  for (int64_t k : {37, 128, 2560, 6912}) {
    std::vector<float> xf(k);
    for (auto& v : xf) v = static_cast<float>(static_cast<int>(rng() % 20001) - 10000) / 77.0f;
    std::vector<int8_t> q1(k), q2(k);
    int32_t s1 = 0, s2 = 0;
    const float a = quantize_row(xf.data(), k, q1.data(), &s1);
    const float b = quantize_row_scalar(xf.data(), k, q2.data(), &s2);
    ++checked;
    if (a != b || s1 != s2 || q1 != q2) {
      ++failures;
      std::printf("MISMATCH quantize_row k=%ld\n", static_cast<long>(k));
    }
  }
  failures += check_attention(rng, checked);
  std::printf("best=%s attention=%s neon_dotprod=%d checked=%d failures=%d\n", best_impl().name, attention_impl(),
              cpu_has_neon_dotprod() ? 1 : 0, checked, failures);
  return failures == 0 ? 0 : 1;
}
