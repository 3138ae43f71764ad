// Ternary x int8 matrix kernels on I2_S-layout weights (csrc/kernels).
//
// Weights: rows of K 2-bit codes (code = w + 1, w in {-1, 0, 1}), K a multiple of 128, each
// 128 weights packed into 32 bytes with byte j holding weights j, 32+j, 64+j, 96+j from the
// high bits down: bitnet.cpp's I2_S layout, so plane p of a 32-byte block lines up with the
// 32 contiguous activations 32p..32p+31.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bitnet::kernels {

constexpr int kBlock = 128;  // weights per 32-byte block

// sum_k code[r][k] * x[k] for one packed row (codes are w + 1), in exact integer arithmetic;
// the caller subtracts sum_k x[k], computed once per token, to get sum_k w[r][k] * x[k].
using RowDot = int32_t (*)(const uint8_t* row, const int8_t* x, int64_t k);

int32_t row_dot_scalar(const uint8_t* row, const int8_t* x, int64_t k);
int32_t row_dot_avx2(const uint8_t* row, const int8_t* x, int64_t k);  // needs AVX2

// The fastest implementation this CPU can run, chosen at run time, and its name.
RowDot best_row_dot();
const char* best_kernel_name();
bool cpu_has_avx2();

// y[t][r] = (sum_k w[r][k] * xq[t][k]) * w_scale * x_scale[t] for t < n_tokens, r < rows,
// split over n_threads. `dot` picks the implementation (tests compare them).
void gemm(const uint8_t* weights, int64_t rows, int64_t k, float w_scale, const int8_t* xq,
          const float* x_scale, int64_t n_tokens, float* y, int n_threads, RowDot dot);

}  // namespace bitnet::kernels
