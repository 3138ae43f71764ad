// Where the 2-bit codes of a group of 128 weights lie in a row, for both layouts (csrc/kernels).
#pragma once

#include <cstdint>

#include "kernels/ternary.h"

namespace bitnet::kernels {

// Where group g (128 weights) of a row starts.
template <Layout L>
inline const uint8_t* group_ptr(const uint8_t* row, int64_t g) {
  if constexpr (L == Layout::kI2S) {
    return row + g * 32;
  } else {
    return row + (g >> 1) * kTq2BlockBytes + (g & 1) * 32;
  }
}

// Bit position of plane p (weights 32p..32p+31 of a group) within each byte.
template <Layout L>
constexpr int plane_shift(int p) {
  return L == Layout::kI2S ? 6 - 2 * p : 2 * p;
}

}  // namespace bitnet::kernels
