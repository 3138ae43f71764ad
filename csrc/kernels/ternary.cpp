#include "kernels/ternary.h"

#include "kernels/thread_pool.h"

#include <algorithm>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define BITNET_X86 1
#endif

namespace bitnet::kernels {

int32_t row_dot_scalar(const uint8_t* row, const int8_t* x, int64_t k) {
  int32_t sum = 0;
  for (int64_t block = 0; block < k; block += kBlock) {
    const uint8_t* codes = row + block / 4;
    const int8_t* xb = x + block;
    for (int j = 0; j < 32; ++j) {
      const uint8_t byte = codes[j];
      sum += ((byte >> 6) & 3) * xb[j];
      sum += ((byte >> 4) & 3) * xb[32 + j];
      sum += ((byte >> 2) & 3) * xb[64 + j];
      sum += (byte & 3) * xb[96 + j];
    }
  }
  return sum;
}

#if BITNET_X86
// Compiled for AVX2 regardless of the build's baseline; only called when the CPU has it.
__attribute__((target("avx2"))) int32_t row_dot_avx2(const uint8_t* row, const int8_t* x, int64_t k) {
  const __m256i mask = _mm256_set1_epi8(3);
  const __m256i ones16 = _mm256_set1_epi16(1);
  __m256i acc = _mm256_setzero_si256();  // sum code * x
  for (int64_t block = 0; block < k; block += kBlock) {
    const __m256i codes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + block / 4));
    const int8_t* xb = x + block;
    for (int plane = 0; plane < 4; ++plane) {
      const __m256i c = _mm256_and_si256(_mm256_srli_epi16(codes, 6 - 2 * plane), mask);
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + 32 * plane));
      // codes are unsigned 0..2 and x signed: u8 x i8 pairs sum to at most 2*2*128, no saturation.
      acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(c, v), ones16));
    }
  }
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

bool cpu_has_avx2() { return __builtin_cpu_supports("avx2"); }
#else
int32_t row_dot_avx2(const uint8_t* row, const int8_t* x, int64_t k) { return row_dot_scalar(row, x, k); }
bool cpu_has_avx2() { return false; }
#endif

RowDot best_row_dot() { return cpu_has_avx2() ? &row_dot_avx2 : &row_dot_scalar; }

const char* best_kernel_name() { return cpu_has_avx2() ? "i2s-avx2" : "i2s-scalar"; }

void gemm(const uint8_t* weights, int64_t rows, int64_t k, float w_scale, const int8_t* xq,
          const float* x_scale, int64_t n_tokens, float* y, int n_threads, RowDot dot) {
  const int64_t row_bytes = k / 4;
  std::vector<int32_t> xsum(static_cast<size_t>(n_tokens), 0);  // codes are w + 1
  for (int64_t tok = 0; tok < n_tokens; ++tok) {
    for (int64_t i = 0; i < k; ++i) xsum[tok] += xq[tok * k + i];
  }
  auto work = [&](int64_t r0, int64_t r1) {
    // Rows outer: a row's bytes stay in cache while every token uses them.
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* row = weights + r * row_bytes;
      for (int64_t t = 0; t < n_tokens; ++t) {
        y[t * rows + r] = static_cast<float>(dot(row, xq + t * k, k) - xsum[t]) * w_scale * x_scale[t];
      }
    }
  };
  // Chunks of rows, several per thread so that uneven thread speeds even out.
  const int n_chunks = static_cast<int>(std::min<int64_t>(rows, std::max(1, n_threads) * 4));
  const int64_t chunk = (rows + n_chunks - 1) / n_chunks;
  ThreadPool::instance().run(n_chunks, n_threads, [&](int i) {
    work(i * chunk, std::min(rows, (i + 1) * chunk));
  });
}

}  // namespace bitnet::kernels
