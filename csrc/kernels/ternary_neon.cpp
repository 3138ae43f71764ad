// The NEON kernels (AArch64): baseline NEON, and sdot where the CPU has the Armv8.2
// dot-product extension.
#include "kernels/isa.h"

#if BITNET_NEON

#include <arm_neon.h>

namespace bitnet::kernels::detail {


namespace {

template <Layout L, int R, int T>
void neon(const uint8_t* w, int64_t ws, const int8_t* x, int64_t xs, int64_t k, int32_t* out) {
  const uint8x16_t mask = vdupq_n_u8(3);
  int32x4_t acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = vdupq_n_s32(0);
  for (int64_t g = 0; g < k / kGroup; ++g) {
    for (int half = 0; half < 2; ++half) {  // 16 of the group's 32 bytes at a time
      uint8x16_t c[R];
      for (int r = 0; r < R; ++r) c[r] = vld1q_u8(group_ptr<L>(w + r * ws, g) + 16 * half);
      for (int p = 0; p < 4; ++p) {
        const int8x16_t shift = vdupq_n_s8(static_cast<int8_t>(-plane_shift<L>(p)));
        for (int r = 0; r < R; ++r) {
          const int8x16_t wv = vreinterpretq_s8_u8(vandq_u8(vshlq_u8(c[r], shift), mask));
          for (int t = 0; t < T; ++t) {
            const int8x16_t xv = vld1q_s8(x + t * xs + g * kGroup + 32 * p + 16 * half);
            int16x8_t prod = vmull_s8(vget_low_s8(wv), vget_low_s8(xv));
            prod = vmlal_s8(prod, vget_high_s8(wv), vget_high_s8(xv));
            acc[r][t] = vpadalq_s16(acc[r][t], prod);
          }
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) out[r * T + t] = vaddvq_s32(acc[r][t]);
}
}  // namespace

BITNET_TILE_DISPATCH(neon)

namespace {

// The same with the dot-product extension (Armv8.2 `sdot`, checked at run time): 16 products and
// their accumulation in one instruction.
#define BITNET_DOTPROD_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))
template <Layout L, int R, int T>
BITNET_DOTPROD_TARGET void neon_sdot(const uint8_t* w, int64_t ws, const int8_t* x, int64_t xs, int64_t k,
                                     int32_t* out) {
  const uint8x16_t mask = vdupq_n_u8(3);
  int32x4_t acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = vdupq_n_s32(0);
  for (int64_t g = 0; g < k / kGroup; ++g) {
    for (int half = 0; half < 2; ++half) {
      uint8x16_t c[R];
      for (int r = 0; r < R; ++r) c[r] = vld1q_u8(group_ptr<L>(w + r * ws, g) + 16 * half);
      for (int p = 0; p < 4; ++p) {
        const int8x16_t shift = vdupq_n_s8(static_cast<int8_t>(-plane_shift<L>(p)));
        for (int r = 0; r < R; ++r) {
          const int8x16_t wv = vreinterpretq_s8_u8(vandq_u8(vshlq_u8(c[r], shift), mask));
          for (int t = 0; t < T; ++t) {
            acc[r][t] = vdotq_s32(acc[r][t], wv, vld1q_s8(x + t * xs + g * kGroup + 32 * p + 16 * half));
          }
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) out[r * T + t] = vaddvq_s32(acc[r][t]);
}
}  // namespace

BITNET_TILE_DISPATCH(neon_sdot)

namespace {

// Over unpacked codes (batches). Baseline NEON: vmull/vmlal pairs into 16 bits (at most
// 2 * 2 * 128 per lane), pairwise-added into 32-bit sums, 16 products per 3 instructions.
template <int R, int T>
void neon_unpacked(const uint8_t* c, int64_t cs, const int8_t* x, int64_t xs, int64_t k, int32_t* out,
                   int64_t out_stride) {
  int32x4_t acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = vdupq_n_s32(0);
  for (int64_t i = 0; i < k; i += 16) {
    int8x16_t w[R];
    for (int r = 0; r < R; ++r) w[r] = vreinterpretq_s8_u8(vld1q_u8(c + r * cs + i));
    for (int t = 0; t < T; ++t) {
      const int8x16_t xv = vld1q_s8(x + t * xs + i);
      for (int r = 0; r < R; ++r) {
        const int16x8_t prod = vmlal_high_s8(vmull_s8(vget_low_s8(w[r]), vget_low_s8(xv)), w[r], xv);
        acc[r][t] = vpadalq_s16(acc[r][t], prod);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) out[t * out_stride + r] += vaddvq_s32(acc[r][t]);
}

// With the dot-product extension: one `sdot` per 16 products.
template <int R, int T>
BITNET_DOTPROD_TARGET void neon_sdot_unpacked(const uint8_t* c, int64_t cs, const int8_t* x, int64_t xs, int64_t k,
                                              int32_t* out, int64_t out_stride) {
  int32x4_t acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = vdupq_n_s32(0);
  for (int64_t i = 0; i < k; i += 16) {
    int8x16_t w[R];
    for (int r = 0; r < R; ++r) w[r] = vreinterpretq_s8_u8(vld1q_u8(c + r * cs + i));
    for (int t = 0; t < T; ++t) {
      const int8x16_t xv = vld1q_s8(x + t * xs + i);
      for (int r = 0; r < R; ++r) acc[r][t] = vdotq_s32(acc[r][t], w[r], xv);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) out[t * out_stride + r] += vaddvq_s32(acc[r][t]);
}

}  // namespace

BITNET_UNPACKED_DISPATCH(neon_unpacked)
BITNET_UNPACKED_DISPATCH(neon_sdot_unpacked)

}  // namespace bitnet::kernels::detail

#endif  // BITNET_NEON
