// The output head on our kernels: ggml's Q6_K weight blocks, read where they lie, times
// activations quantized to int8 per 256 values (csrc/kernels).
//
// A Q6_K block holds 256 weights in 210 bytes: ql[128] (low 4 bits), qh[64] (high 2 bits),
// scales[16] (int8, one per 16 weights) and an fp16 d; weight = d * scale * (q - 32), q in 0..63.
// Weight 128h + 32i + l (h < 2, i < 4, l < 32) has its low 4 bits in ql[64h + 32(i & 1) + l] (the
// low nibble for i < 2, the high one for i >= 2), its high 2 bits at bit 2i of qh[32h + l], and
// scale 8h + 2i + l / 16.
#pragma once

#include <cstdint>

namespace bitnet::kernels {

constexpr int kQ6KBlock = 256;
constexpr int kQ6KBlockBytes = 210;

// One token's activations per 256 values, as ggml's Q8_K: x ~= q * d, q in [-127, 127], and the
// sums of q over each 16 values (they carry the -32 offset of Q6_K).
struct Q8Block {
  float d;
  int8_t q[kQ6KBlock];
  int16_t sums[kQ6KBlock / 16];
};

// Quantizes k floats (k a multiple of 256) into k / 256 blocks: absmax / 127 per block, rounded
// to nearest even, like the per-token quantize_row.
void quantize_row_q8(const float* x, int64_t k, Q8Block* out);

// out[r] = row r . x for the n_rows Q6_K rows starting at w (w_stride bytes apart), each of
// n_blocks blocks, against one token's n_blocks activation blocks.
using Q6KDotFn = void (*)(const uint8_t* w, int64_t w_stride, int64_t n_rows, const Q8Block* x, int64_t n_blocks,
                          float* out);

void q6k_dot_scalar(const uint8_t* w, int64_t w_stride, int64_t n_rows, const Q8Block* x, int64_t n_blocks,
                    float* out);
// The AVX2 kernel, or nullptr where the CPU lacks AVX2 (there the head stays on ggml).
Q6KDotFn q6k_dot_avx2();
// Two tokens at once (a decode step of several sequences): each row decoded once for both;
// (2B-4T decode steps, 2 threads: 4 sequences 78 -> 72 ms with the four-token kernel below)
// out0/out1 are exactly what the one-token kernel gives for x0/x1.
using Q6KDot2Fn = void (*)(const uint8_t* w, int64_t w_stride, int64_t n_rows, const Q8Block* x0, const Q8Block* x1,
                           int64_t n_blocks, float* out0, float* out1);
Q6KDot2Fn q6k_dot2_avx2();
// Four tokens at once: x[t] and out[t] for t < 4, each exactly as the one-token kernel.
using Q6KDot4Fn = void (*)(const uint8_t* w, int64_t w_stride, int64_t n_rows, const Q8Block* const* x,
                           int64_t n_blocks, float* const* out);
Q6KDot4Fn q6k_dot4_avx2();

}  // namespace bitnet::kernels
