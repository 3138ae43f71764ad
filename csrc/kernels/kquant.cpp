#include "kernels/kquant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define BITNET_X86 1
#endif

#include "kernels/fp16.h"
#include "kernels/ternary.h"

namespace bitnet::kernels {

void quantize_row_q8(const float* x, int64_t k, Q8Block* out) {
  for (int64_t b = 0; b < k / kQ6KBlock; ++b) {
    const float* xb = x + b * kQ6KBlock;
    Q8Block& y = out[b];
    float absmax = 0.0f;
    for (int i = 0; i < kQ6KBlock; ++i) absmax = std::max(absmax, std::fabs(xb[i]));
    y.d = absmax > 0.0f ? absmax / 127.0f : 1.0f;
    const float inv = 1.0f / y.d;
    for (int g = 0; g < kQ6KBlock / 16; ++g) {
      int sum = 0;
      for (int i = 16 * g; i < 16 * g + 16; ++i) {
        const int v = std::clamp(static_cast<int>(std::nearbyint(xb[i] * inv)), -127, 127);
        y.q[i] = static_cast<int8_t>(v);
        sum += v;
      }
      y.sums[g] = static_cast<int16_t>(sum);
    }
  }
}

void q6k_dot_scalar(const uint8_t* w, int64_t w_stride, int64_t n_rows, const Q8Block* x, int64_t n_blocks,
                    float* out) {
  for (int64_t r = 0; r < n_rows; ++r) {
    float total = 0.0f;
    for (int64_t b = 0; b < n_blocks; ++b) {
      const uint8_t* blk = w + r * w_stride + b * kQ6KBlockBytes;
      const uint8_t* ql = blk;
      const uint8_t* qh = blk + 128;
      const auto* sc = reinterpret_cast<const int8_t*>(blk + 192);
      int32_t sum = 0;
      for (int h = 0; h < 2; ++h) {
        for (int i = 0; i < 4; ++i) {
          for (int l = 0; l < 32; ++l) {
            const uint8_t lo = ql[64 * h + 32 * (i & 1) + l];
            const int q = ((i < 2 ? lo & 0xF : lo >> 4) | (((qh[32 * h + l] >> (2 * i)) & 3) << 4)) - 32;
            sum += sc[8 * h + 2 * i + l / 16] * q * x[b].q[128 * h + 32 * i + l];
          }
        }
      }
      total += fp16_to_fp32(blk + 208) * x[b].d * static_cast<float>(sum);
    }
    out[r] = total;
  }
}

#if BITNET_X86

namespace {

__attribute__((target("avx2"))) inline float hsum_ps(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Per 128 weights: the four 32-weight planes' 6-bit q (unsigned, the -32 goes through the
// activation sums), maddubs with the activations, madd with each 16-weight scale. Software
// prefetch 4 KiB ahead (a block spans up to 5 lines): in a standalone A/B over the 2B-4T head
// (128256 x 2560, from memory, same run) it took this kernel from 17.1 to 22.8 GB/s at 2 threads,
// where ggml's Q6_K x Q8_K dot product ran at 18.2.
constexpr int kPrefetchBytes = 4096;

// T tokens (1 or 2) against each row: the 6-bit codes and scale shuffles are decoded once for
// both, and each token's sums follow the one-token order exactly (the same float result).
template <int T>
__attribute__((target("avx2"), always_inline)) inline void q6k_rows_avx2(const uint8_t* w, int64_t w_stride,
                                                                        int64_t n_rows, const Q8Block* const* x,
                                                                        int64_t n_blocks, float* const* out) {
  const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(0x03), mc = _mm256_set1_epi8(0x0C);
  const __m256i m30 = _mm256_set1_epi8(0x30);
  // pshufb controls: the low 16-byte lane takes scale 2i of the 8 in each lane, the high lane 2i + 1.
  const __m256i c0 = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2,
                                      3, 2, 3, 2, 3);
  const __m256i c1 = _mm256_add_epi8(c0, _mm256_set1_epi8(4));
  const __m256i c2 = _mm256_add_epi8(c0, _mm256_set1_epi8(8));
  const __m256i c3 = _mm256_add_epi8(c0, _mm256_set1_epi8(12));
  for (int64_t r = 0; r < n_rows; ++r) {
    const uint8_t* row = w + r * w_stride;
    __m256 accf[T];
    for (int t = 0; t < T; ++t) accf[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n_blocks; ++b) {
      const uint8_t* blk = row + b * kQ6KBlockBytes;
      const char* ahead = reinterpret_cast<const char*>(blk) + kPrefetchBytes;
      _mm_prefetch(ahead, _MM_HINT_T0);
      _mm_prefetch(ahead + 64, _MM_HINT_T0);
      _mm_prefetch(ahead + 128, _MM_HINT_T0);
      _mm_prefetch(ahead + 192, _MM_HINT_T0);
      const __m256i s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192)));
      __m256i acc[T];
      for (int t = 0; t < T; ++t) {
        // -32 * sum_j scale_j * (sum of the activations of sub-block j)
        const __m256i offset =
            _mm256_madd_epi16(s16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[t][b].sums)));
        acc[t] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(offset, 5));
      }
      for (int h = 0; h < 2; ++h) {
        const __m256i sh = h == 0 ? _mm256_permute2x128_si256(s16, s16, 0x00) : _mm256_permute2x128_si256(s16, s16, 0x11);
        const __m256i qla = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h));
        const __m256i qlb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h + 32));
        const __m256i qhv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * h));
        const __m256i q0 = _mm256_or_si256(_mm256_and_si256(qla, m4), _mm256_slli_epi16(_mm256_and_si256(qhv, m3), 4));
        const __m256i q1 = _mm256_or_si256(_mm256_and_si256(qlb, m4), _mm256_slli_epi16(_mm256_and_si256(qhv, mc), 2));
        const __m256i q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qla, 4), m4), _mm256_and_si256(qhv, m30));
        const __m256i q3 =
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qlb, 4), m4), _mm256_and_si256(_mm256_srli_epi16(qhv, 2), m30));
        const __m256i k0 = _mm256_shuffle_epi8(sh, c0), k1 = _mm256_shuffle_epi8(sh, c1);
        const __m256i k2 = _mm256_shuffle_epi8(sh, c2), k3 = _mm256_shuffle_epi8(sh, c3);
        for (int t = 0; t < T; ++t) {
          const int8_t* xq = x[t][b].q + 128 * h;
          const __m256i p0 = _mm256_maddubs_epi16(q0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq)));
          const __m256i p1 = _mm256_maddubs_epi16(q1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 32)));
          const __m256i p2 = _mm256_maddubs_epi16(q2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 64)));
          const __m256i p3 = _mm256_maddubs_epi16(q3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 96)));
          const __m256i s01 = _mm256_add_epi32(_mm256_madd_epi16(p0, k0), _mm256_madd_epi16(p1, k1));
          const __m256i s23 = _mm256_add_epi32(_mm256_madd_epi16(p2, k2), _mm256_madd_epi16(p3, k3));
          acc[t] = _mm256_add_epi32(acc[t], _mm256_add_epi32(s01, s23));
        }
      }
      const float dw = fp16_to_fp32(blk + 208);
      for (int t = 0; t < T; ++t) {
        const float d = dw * x[t][b].d;
        accf[t] = _mm256_add_ps(accf[t], _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(acc[t])));
      }
    }
    for (int t = 0; t < T; ++t) out[t][r] = hsum_ps(accf[t]);
  }
}

__attribute__((target("avx2"))) void q6k_dot_avx2_impl(const uint8_t* w, int64_t w_stride, int64_t n_rows,
                                                      const Q8Block* x, int64_t n_blocks, float* out) {
  q6k_rows_avx2<1>(w, w_stride, n_rows, &x, n_blocks, &out);
}

__attribute__((target("avx2"))) void q6k_dot2_avx2_impl(const uint8_t* w, int64_t w_stride, int64_t n_rows,
                                                       const Q8Block* x0, const Q8Block* x1, int64_t n_blocks,
                                                       float* out0, float* out1) {
  const Q8Block* x[2] = {x0, x1};
  float* out[2] = {out0, out1};
  q6k_rows_avx2<2>(w, w_stride, n_rows, x, n_blocks, out);
}

__attribute__((target("avx2"))) void q6k_dot4_avx2_impl(const uint8_t* w, int64_t w_stride, int64_t n_rows,
                                                       const Q8Block* const* x, int64_t n_blocks, float* const* out) {
  q6k_rows_avx2<4>(w, w_stride, n_rows, x, n_blocks, out);
}

}  // namespace

Q6KDotFn q6k_dot_avx2() { return cpu_has_avx2() ? &q6k_dot_avx2_impl : nullptr; }
Q6KDot2Fn q6k_dot2_avx2() { return cpu_has_avx2() ? &q6k_dot2_avx2_impl : nullptr; }
Q6KDot4Fn q6k_dot4_avx2() { return cpu_has_avx2() ? &q6k_dot4_avx2_impl : nullptr; }

#else

Q6KDotFn q6k_dot_avx2() { return nullptr; }
Q6KDot2Fn q6k_dot2_avx2() { return nullptr; }
Q6KDot4Fn q6k_dot4_avx2() { return nullptr; }

#endif

}  // namespace bitnet::kernels
