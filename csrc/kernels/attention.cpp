#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "kernels/fp16.h"
#include "kernels/isa.h"

#if BITNET_X86
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace bitnet::kernels {

void attend_scalar(const AttentionShape& shape, const float* q, const uint16_t* k, const uint16_t* v, int64_t n_kv,
                   int kv_head, float* out, float* scratch) {
  const int g = shape.n_head / shape.n_head_kv, hd = shape.head_dim;
  const int64_t off = static_cast<int64_t>(kv_head) * hd;
  for (int j = 0; j < g; ++j) {
    const float* qj = q + static_cast<int64_t>(j) * hd;
    float* s = scratch + j * n_kv;
    float max = -INFINITY;
    for (int64_t c = 0; c < n_kv; ++c) {
      const uint16_t* kc = k + c * shape.cell_stride + off;
      float dot = 0.0f;
      for (int d = 0; d < hd; ++d) dot += qj[d] * fp16_to_fp32(kc[d]);
      s[c] = dot * shape.scale;
      max = std::max(max, s[c]);
    }
    float sum = 0.0f;
    for (int64_t c = 0; c < n_kv; ++c) {
      s[c] = std::exp(s[c] - max);
      sum += s[c];
    }
    float* oj = out + static_cast<int64_t>(j) * hd;
    std::fill(oj, oj + hd, 0.0f);
    for (int64_t c = 0; c < n_kv; ++c) {
      const uint16_t* vc = v + c * shape.cell_stride + off;
      for (int d = 0; d < hd; ++d) oj[d] += s[c] * fp16_to_fp32(vc[d]);
    }
    const float inv = 1.0f / sum;
    for (int d = 0; d < hd; ++d) oj[d] *= inv;
  }
}

#if BITNET_X86
namespace {

#define BITNET_ATTN_TARGET __attribute__((target("avx2,fma,f16c")))

BITNET_ATTN_TARGET inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

BITNET_ATTN_TARGET inline __m256 load_f16(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// exp(x) for x <= 0: x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-6 polynomial, 2^n through
// the exponent bits. Inputs below -87 give exp(-87) (~1.6e-38), which is 0 beside the maximum's 1.
BITNET_ATTN_TARGET inline __m256 exp_nonpositive(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// Softmax weights (unnormalized) of g rows of n_kv scores in place, and 1 / their sums in inv.
BITNET_ATTN_TARGET void softmax_rows(float* scratch, int g, int64_t n_kv, float* inv) {
  for (int j = 0; j < g; ++j) {
    float* s = scratch + j * n_kv;
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    int64_t c = 0;
    for (; c + 8 <= n_kv; c += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(s + c));
    float lanes[8];
    _mm256_storeu_ps(lanes, vmax);
    float max = lanes[0];
    for (int i = 1; i < 8; ++i) max = std::max(max, lanes[i]);
    for (; c < n_kv; ++c) max = std::max(max, s[c]);
    const __m256 m = _mm256_set1_ps(max);
    __m256 vsum = _mm256_setzero_ps();
    for (c = 0; c + 8 <= n_kv; c += 8) {
      const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + c), m));
      _mm256_storeu_ps(s + c, e);
      vsum = _mm256_add_ps(vsum, e);
    }
    float sum = hsum(vsum);
    if (c < n_kv) {  // the tail through the same vector exp, padded with -inf (exp -> ~0)
      float tail[8];
      const int64_t nt = n_kv - c;
      for (int i = 0; i < 8; ++i) tail[i] = i < nt ? s[c + i] - max : -INFINITY;
      _mm256_storeu_ps(tail, exp_nonpositive(_mm256_loadu_ps(tail)));
      for (int64_t i = 0; i < nt; ++i) {
        s[c + i] = tail[i];
        sum += tail[i];
      }
    }
    inv[j] = 1.0f / sum;
  }
}

BITNET_ATTN_TARGET void attend_avx2(const AttentionShape& shape, const float* q, const uint16_t* k,
                                    const uint16_t* v, int64_t n_kv, int kv_head, float* out, float* scratch) {
  const int g = shape.n_head / shape.n_head_kv, hd = shape.head_dim;
  const int64_t off = static_cast<int64_t>(kv_head) * hd;
  // Scores, up to four query heads per pass over the keys (each key chunk loaded once for them).
  for (int j0 = 0; j0 < g; j0 += 4) {
    const int nj = std::min(4, g - j0);
    const float* qj = q + static_cast<int64_t>(j0) * hd;
    for (int64_t c = 0; c < n_kv; ++c) {
      const uint16_t* kc = k + c * shape.cell_stride + off;
      __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      for (int d = 0; d < hd; d += 8) {
        const __m256 kv = load_f16(kc + d);
        for (int j = 0; j < nj; ++j) acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(qj + j * hd + d), kv, acc[j]);
      }
      for (int j = 0; j < nj; ++j) scratch[(j0 + j) * n_kv + c] = hsum(acc[j]) * shape.scale;
    }
  }
  float inv[64];
  softmax_rows(scratch, g, n_kv, inv);
  // Weighted sum of the values: per 8 dimensions and up to four query heads, the sums stay in
  // registers over the cells (each value chunk converted once for the four). Every lane still
  // adds the cells in order, so the result is the same as a cell-by-cell pass.
  for (int j0 = 0; j0 < g; j0 += 4) {
    const int nj = std::min(4, g - j0);
    for (int d = 0; d < hd; d += 8) {
      __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      const uint16_t* vd = v + off + d;
      for (int64_t c = 0; c < n_kv; ++c) {
        const __m256 vv = load_f16(vd + c * shape.cell_stride);
        for (int j = 0; j < nj; ++j) {
          acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(scratch[(j0 + j) * n_kv + c]), vv, acc[j]);
        }
      }
      for (int j = 0; j < nj; ++j) _mm256_storeu_ps(out + static_cast<int64_t>(j0 + j) * hd + d, acc[j]);
    }
  }
  for (int j = 0; j < g; ++j) {
    const __m256 f = _mm256_set1_ps(inv[j]);
    float* o = out + static_cast<int64_t>(j) * hd;
    for (int d = 0; d < hd; d += 8) _mm256_storeu_ps(o + d, _mm256_mul_ps(_mm256_loadu_ps(o + d), f));
  }
}

#define BITNET_ATTN512_TARGET __attribute__((target("avx512f,avx2,fma,f16c")))

// attend_avx2 with 16 lanes (head_dim a multiple of 16): the same passes, each lane still adding
// the dimensions of a score, and the cells of a value sum, in the same order per lane.
BITNET_ATTN512_TARGET void attend_avx512(const AttentionShape& shape, const float* q, const uint16_t* k,
                                         const uint16_t* v, int64_t n_kv, int kv_head, float* out,
                                         float* scratch) {
  const int g = shape.n_head / shape.n_head_kv, hd = shape.head_dim;
  const int64_t off = static_cast<int64_t>(kv_head) * hd;
  for (int j0 = 0; j0 < g; j0 += 4) {
    const int nj = std::min(4, g - j0);
    const float* qj = q + static_cast<int64_t>(j0) * hd;
    for (int64_t c = 0; c < n_kv; ++c) {
      const uint16_t* kc = k + c * shape.cell_stride + off;
      __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
      for (int d = 0; d < hd; d += 16) {
        const __m512 kv = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(kc + d)));
        for (int j = 0; j < nj; ++j) acc[j] = _mm512_fmadd_ps(_mm512_loadu_ps(qj + j * hd + d), kv, acc[j]);
      }
      for (int j = 0; j < nj; ++j) scratch[(j0 + j) * n_kv + c] = _mm512_reduce_add_ps(acc[j]) * shape.scale;
    }
  }
  float inv[64];
  softmax_rows(scratch, g, n_kv, inv);
  for (int j0 = 0; j0 < g; j0 += 4) {
    const int nj = std::min(4, g - j0);
    for (int d = 0; d < hd; d += 16) {
      __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
      const uint16_t* vd = v + off + d;
      for (int64_t c = 0; c < n_kv; ++c) {
        const __m512 vv =
            _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(vd + c * shape.cell_stride)));
        for (int j = 0; j < nj; ++j) {
          acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(scratch[(j0 + j) * n_kv + c]), vv, acc[j]);
        }
      }
      for (int j = 0; j < nj; ++j) {
        _mm512_storeu_ps(out + static_cast<int64_t>(j0 + j) * hd + d, _mm512_mul_ps(acc[j], _mm512_set1_ps(inv[j0 + j])));
      }
    }
  }
}

bool cpu_has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
}

bool use_avx2() {
  static const bool yes = cpu_has_avx2() && __builtin_cpu_supports("fma") && cpu_has_f16c();
  return yes;
}

// AVX-512 attention where the ternary kernels are AVX-512 ones (so BITNET_MAX_ISA=avx2 also
// measures AVX2 attention).
bool use_avx512() {
  static const bool yes = [] {
    const std::string family = best_impl().name;
    return use_avx2() && __builtin_cpu_supports("avx512f") && (family == "avx512vnni" || family == "amx");
  }();
  return yes;
}

}  // namespace
#endif

void attend(const AttentionShape& shape, const float* q, const uint16_t* k, const uint16_t* v, int64_t n_kv,
            int kv_head, float* out, float* scratch) {
#if BITNET_X86
  if (use_avx512() && shape.head_dim % 16 == 0 && shape.n_head / shape.n_head_kv <= 64) {
    return attend_avx512(shape, q, k, v, n_kv, kv_head, out, scratch);
  }
  if (use_avx2() && shape.head_dim % 8 == 0 && shape.n_head / shape.n_head_kv <= 64) {
    return attend_avx2(shape, q, k, v, n_kv, kv_head, out, scratch);
  }
#endif
  attend_scalar(shape, q, k, v, n_kv, kv_head, out, scratch);
}

const char* attention_impl() {
#if BITNET_X86
  if (use_avx512()) return "avx512";
  if (use_avx2()) return "avx2";
#endif
  return "scalar";
}

}  // namespace bitnet::kernels
