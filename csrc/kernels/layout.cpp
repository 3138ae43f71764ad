// Conversions between the two layouts of ternary rows (layout.h says where the codes lie).
#include <cstring>

#include "kernels/layout.h"

namespace bitnet::kernels {

namespace {
// Reverses the order of the four 2-bit fields of a byte (I2_S high-first <-> TQ2_0 low-first).
inline uint8_t swap_planes(uint8_t b) {
  return static_cast<uint8_t>(((b & 0x03) << 6) | ((b & 0x0c) << 2) | ((b & 0x30) >> 2) | ((b & 0xc0) >> 6));
}
}  // namespace

void i2s_row_to_tq2(const uint8_t* src, int64_t k, uint16_t d_fp16, uint8_t* dst) {
  for (int64_t b = 0; b < k / kTq2Block; ++b) {
    for (int j = 0; j < 64; ++j) dst[b * kTq2BlockBytes + j] = swap_planes(src[b * 64 + j]);
    std::memcpy(dst + b * kTq2BlockBytes + 64, &d_fp16, sizeof d_fp16);
  }
}

void tq2_row_to_i2s(const uint8_t* src, int64_t k, uint8_t* dst) {
  for (int64_t b = 0; b < k / kTq2Block; ++b) {
    for (int j = 0; j < 64; ++j) dst[b * 64 + j] = swap_planes(src[b * kTq2BlockBytes + j]);
  }
}

}  // namespace bitnet::kernels
