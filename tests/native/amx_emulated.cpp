// Checks the logic of the AMX-INT8 batch kernel (csrc/kernels/amx_rows.inc) on any CPU: the
// kernel is compiled against software tiles written from Intel's definitions of LDTILECFG,
// TILEZERO, TILELOADD, TDPBSSD, TILESTORED and TILERELEASE, and its output compared, bit for
// bit, with the scalar path of the GEMM driver: both layouts, row counts that are not multiples
// of 32, token counts below, at and past 32, and extreme codes and activations. The activations
// are given in tile order, reordered here independently of the library's to_tile_order. On a CPU with
// AMX the real kernel is also checked by kernel_selftest.cpp and the Python tests.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "kernels/layout.h"
#include "kernels/ternary.h"

namespace emu {

// The tile unit: 8 tiles of up to 16 rows x 64 bytes, shaped by the loaded configuration.
struct Tiles {
  uint8_t palette = 0;
  int rows[8] = {};
  int colsb[8] = {};
  uint8_t data[8][16][64] = {};
};
thread_local Tiles unit;

inline void tile_loadconfig(const void* p) {
  const auto* cfg = static_cast<const uint8_t*>(p);
  unit = Tiles{};
  unit.palette = cfg[0];
  if (unit.palette != 1) throw std::runtime_error("palette must be 1");
  for (int i = 0; i < 8; ++i) {
    uint16_t colsb;
    std::memcpy(&colsb, cfg + 16 + 2 * i, 2);
    unit.colsb[i] = colsb;
    unit.rows[i] = cfg[48 + i];
    if (unit.colsb[i] > 64 || unit.rows[i] > 16) throw std::runtime_error("tile shape out of range");
  }
}
inline void check(int t) {
  if (unit.palette != 1 || unit.rows[t] == 0) throw std::runtime_error("tile used before configuration");
}
inline void tile_zero(int t) {
  check(t);
  std::memset(unit.data[t], 0, sizeof unit.data[t]);
}
inline void tile_loadd(int t, const void* base, long stride) {
  check(t);
  std::memset(unit.data[t], 0, sizeof unit.data[t]);
  for (int r = 0; r < unit.rows[t]; ++r) std::memcpy(unit.data[t][r], static_cast<const uint8_t*>(base) + r * stride, unit.colsb[t]);
}
inline void tile_stored(int t, void* base, long stride) {
  check(t);
  for (int r = 0; r < unit.rows[t]; ++r) std::memcpy(static_cast<uint8_t*>(base) + r * stride, unit.data[t][r], unit.colsb[t]);
}
// TDPBSSD: C[m][n] += sum over k of A[m][4k + i] * B[k][4n + i] (signed bytes), 32-bit sums.
inline void tile_dpbssd(int c, int a, int b) {
  check(c), check(a), check(b);
  const int M = unit.rows[c], N = unit.colsb[c] / 4, K = unit.colsb[a] / 4;
  if (unit.rows[a] != M || unit.rows[b] != K || unit.colsb[b] != unit.colsb[c]) throw std::runtime_error("tile shapes do not chain");
  for (int m = 0; m < M; ++m) {
    for (int n = 0; n < N; ++n) {
      int32_t acc;
      std::memcpy(&acc, unit.data[c][m] + 4 * n, 4);
      for (int k = 0; k < K; ++k) {
        for (int i = 0; i < 4; ++i) {
          acc += static_cast<int8_t>(unit.data[a][m][4 * k + i]) * static_cast<int8_t>(unit.data[b][k][4 * n + i]);
        }
      }
      std::memcpy(unit.data[c][m] + 4 * n, &acc, 4);
    }
  }
}
inline void tile_release() { unit = Tiles{}; }

}  // namespace emu

#define _tile_loadconfig(p) emu::tile_loadconfig(p)
#define _tile_zero(t) emu::tile_zero(t)
#define _tile_loadd(t, base, stride) emu::tile_loadd(t, base, stride)
#define _tile_stored(t, base, stride) emu::tile_stored(t, base, stride)
#define _tile_dpbssd(c, a, b) emu::tile_dpbssd(c, a, b)
#define _tile_release() emu::tile_release()

// In a namespace of its own: the library's (real) amx_rows is linked in too.
namespace emu_kernel {
using namespace bitnet::kernels;
#define BITNET_AMX_TARGET
#define BITNET_AMX_B_TILE amx_detail::b_tile_reference
#include "kernels/amx_rows.inc"
}  // namespace emu_kernel

int main() {
  using namespace bitnet::kernels;
  uint64_t state = 777;
  auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<uint32_t>(state >> 33);
  };
  int checked = 0, failures = 0;
  for (Layout layout : {Layout::kI2S, Layout::kTQ2}) {
    for (int64_t k : {256, 768, 2560}) {
      for (int64_t rows : {5, 32, 45}) {
        for (int64_t n : {1, 17, 32, 33, 70}) {
          for (int pattern = 0; pattern < 2; ++pattern) {
            const int64_t rb = row_bytes(layout, k), xs = k + 16;
            // Random codes (3 is not a ternary code, but the kernels must still agree on it), or
            // every code 2 with activations at the extremes.
            std::vector<uint8_t> w(static_cast<size_t>(rows * rb));
            for (auto& b : w) b = pattern == 1 ? 0xAA : static_cast<uint8_t>(next());
            if (layout == Layout::kTQ2) {  // a valid fp16 scale per block (1.0)
              for (int64_t r = 0; r < rows; ++r) {
                for (int64_t blk = 0; blk < k / kTq2Block; ++blk) {
                  uint8_t* s = w.data() + r * rb + blk * kTq2BlockBytes + 64;
                  s[0] = 0x00, s[1] = 0x3C;
                }
              }
            }
            std::vector<int8_t> q(static_cast<size_t>(n * xs));
            for (auto& v : q) v = pattern == 1 ? ((next() & 1) ? 127 : -127) : static_cast<int8_t>(static_cast<int>(next() % 255) - 127);
            std::vector<float> scale(static_cast<size_t>(n));
            std::vector<int32_t> sum(static_cast<size_t>(n));
            for (int64_t t = 0; t < n; ++t) {
              scale[t] = 0.01f * static_cast<float>(1 + t % 7);
              int32_t s = 0;
              for (int64_t i = 0; i < k; ++i) s += q[t * xs + i];
              sum[t] = s;
            }
            const TernaryMatrix m{layout, w.data(), rows, k, rb, 0.5f};
            const QuantizedActivations x{q.data(), xs, scale.data(), sum.data(), n};
            // The kernel reads activations in tile order (within each 128: position 4q + i holds
            // value 32i + q), written here by hand; the oracle reads the natural order.
            std::vector<int8_t> qt(q.size());
            for (int64_t t = 0; t < n; ++t) {
              for (int64_t p = 0; p < k; ++p) {
                const int64_t g = p / 128 * 128, qq = p % 128 / 4, i = p % 4;
                qt[t * xs + p] = q[t * xs + g + 32 * i + qq];
              }
            }
            const QuantizedActivations xt{qt.data(), xs, scale.data(), sum.data(), n, true};
            std::vector<float> want(static_cast<size_t>(n * rows)), got(want.size(), -1.0f);
            gemm_rows(scalar_impl(), m, 0, rows, x, want.data(), rows, BatchPath::kPacked);
            emu_kernel::amx_rows(m, 0, rows, xt, got.data(), rows);
            ++checked;
            if (std::memcmp(want.data(), got.data(), want.size() * sizeof(float)) != 0) {
              ++failures;
              std::printf("MISMATCH layout=%d k=%ld rows=%ld n=%ld pattern=%d\n", static_cast<int>(layout),
                          static_cast<long>(k), static_cast<long>(rows), static_cast<long>(n), pattern);
            }
          }
        }
      }
    }
  }
  std::printf("checked=%d failures=%d\n", checked, failures);
  return failures == 0 ? 0 : 1;
}
