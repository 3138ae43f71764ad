// IEEE half -> float, exactly, for the weight scales the kernels read (csrc/kernels).
#pragma once

#include <cstdint>
#include <cstring>

namespace bitnet::kernels {

// Every value exactly, subnormals included: they are common as Q6_K block scales of small
// weights (flushing them to zero zeroed half the logits of a test model).
inline float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  if (exp == 0) {
    const float f = static_cast<float>(mant) * 5.9604644775390625e-8f;  // mant * 2^-24
    return sign ? -f : f;
  }
  const uint32_t bits = sign | (exp == 0x1f ? 0x7f800000u | (mant << 13) : ((exp + 112) << 23) | (mant << 13));
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// The fp16 value stored (unaligned) at p.
inline float fp16_to_fp32(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return fp16_to_fp32(h);
}

}  // namespace bitnet::kernels
