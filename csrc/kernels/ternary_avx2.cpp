// The AVX2 kernels: over packed 2-bit codes (generation), over unpacked codes (prompts), the
// one-token GEMV, code unpacking and activation quantization.
#include "kernels/isa.h"

#if BITNET_X86

#include <immintrin.h>

#include <algorithm>
#include <cmath>

namespace bitnet::kernels::detail {

namespace {

// Codes (unsigned 0..2) times int8 activations with maddubs; one maddubs pair is at most
// 2 * 2 * 127 = 508, so 16-bit lanes add 8 groups x 4 planes (16256) before widening to 32 bits.

__attribute__((target("avx2"))) inline int32_t hsum_avx2(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// The totals of eight vectors of 8 int32 lanes, in order: one horizontal-add tree.
__attribute__((target("avx2"), always_inline)) inline __m256i hsum8_avx2(__m256i v0, __m256i v1, __m256i v2,
                                                                       __m256i v3, __m256i v4, __m256i v5,
                                                                       __m256i v6, __m256i v7) {
  const __m256i lo = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
  const __m256i hi = _mm256_hadd_epi32(_mm256_hadd_epi32(v4, v5), _mm256_hadd_epi32(v6, v7));
  // lo = the totals of v0-v3 from the low 128-bit halves | from the high halves; hi for v4-v7.
  return _mm256_add_epi32(_mm256_permute2x128_si256(lo, hi, 0x20), _mm256_permute2x128_si256(lo, hi, 0x31));
}

// Bytes from one pair of groups (256 weights) of a row to the next: a TQ2_0 block, or two I2_S
// groups. Within a pair, the second group starts 32 bytes after the first in both layouts.
template <Layout L>
constexpr int64_t pair_stride() {
  return L == Layout::kI2S ? 64 : kTq2BlockBytes;
}

// One group of R rows x T tokens into the 16-bit accumulators.
template <Layout L, int R, int T>
__attribute__((target("avx2"), always_inline)) inline void avx2_group(const uint8_t* const* w, int64_t offset,
                                                                     const int8_t* const* x, __m256i (&a16)[R][T]) {
  const __m256i mask = _mm256_set1_epi8(3);
  __m256i c[R];
  for (int r = 0; r < R; ++r) c[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[r] + offset));
#pragma GCC unroll 4
  for (int p = 0; p < 4; ++p) {
    __m256i xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[t] + 32 * p));
    for (int r = 0; r < R; ++r) {
      const __m256i wv = _mm256_and_si256(_mm256_srli_epi16(c[r], plane_shift<L>(p)), mask);
      for (int t = 0; t < T; ++t) {
        a16[r][t] = _mm256_add_epi16(a16[r][t], _mm256_maddubs_epi16(wv, xv[t]));
        // Without this GCC reassociates the sums into trees of temporaries and spills them.
        asm("" : "+x"(a16[r][t]));
      }
    }
  }
}

// One row x one token (generation: memory-bound). Two 16-bit sums (even and odd group of each
// pair) halve the chain of dependent adds, and the prefetch runs a fixed number of bytes ahead
// of the reads, which crosses into the following rows (rows are contiguous in both layouts).
// Standalone A/B (131072 x 2560 I2_S rows from memory, 2 threads, same run): one sum with
// 660 bytes ahead 17.4 GB/s, two sums with 4 KiB ahead 20.3 GB/s, plain 32-byte loads 23.4.
constexpr int64_t kGemvPrefetchBytes = 4096;

// The 8 int32 lanes of one row's sums (not yet added together).
template <Layout L>
__attribute__((target("avx2"), always_inline)) inline __m256i avx2_gemv_lanes(const uint8_t* w, const int8_t* x,
                                                                            int64_t k) {
  const __m256i ones = _mm256_set1_epi16(1);
  constexpr int64_t stride = pair_stride<L>();
  const int64_t n_groups = k / kGroup, n_pairs = n_groups / 2;
  __m256i acc = _mm256_setzero_si256();
  for (int64_t p0 = 0; p0 < n_pairs; p0 += 4) {  // 16-bit sums of 4 pairs, then widen
    const int64_t p1 = std::min<int64_t>(n_pairs, p0 + 4);
    __m256i a0[1][1] = {{_mm256_setzero_si256()}}, a1[1][1] = {{_mm256_setzero_si256()}};
    for (int64_t pair = p0; pair < p1; ++pair) {
      const char* b = reinterpret_cast<const char*>(w + pair * stride);
      _mm_prefetch(b + kGemvPrefetchBytes, _MM_HINT_T0);
      if constexpr (L == Layout::kTQ2) {  // a 66-byte block can span 3 lines
        _mm_prefetch(b + kGemvPrefetchBytes + 63, _MM_HINT_T0);
      }
      const int8_t* xg[1] = {x + pair * 2 * kGroup};
      avx2_group<L, 1, 1>(&w, pair * stride, xg, a0);
      xg[0] += kGroup;
      avx2_group<L, 1, 1>(&w, pair * stride + 32, xg, a1);
    }
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_add_epi16(a0[0][0], a1[0][0]), ones));
  }
  if (n_groups & 1) {  // I2_S rows of an odd number of groups
    __m256i a0[1][1] = {{_mm256_setzero_si256()}};
    const int8_t* xg[1] = {x + (n_groups - 1) * kGroup};
    avx2_group<L, 1, 1>(&w, n_pairs * stride, xg, a0);
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(a0[0][0], ones));
  }
  return acc;
}

// out[r] = row r . x for n_rows rows, the rows' lane sums reduced 8 rows at a time (one
// horizontal-add tree instead of eight), with no call or epilogue between rows.
template <Layout L>
__attribute__((target("avx2"))) void avx2_gemv(Layout, const uint8_t* w, int64_t ws, int64_t n_rows, const int8_t* x,
                                               int64_t k, int32_t* out) {
  int64_t r = 0;
  for (; r + 8 <= n_rows; r += 8) {
    __m256i v[8];
    for (int i = 0; i < 8; ++i) v[i] = avx2_gemv_lanes<L>(w + (r + i) * ws, x, k);
    const __m256i sums = hsum8_avx2(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + r), sums);
  }
  for (; r < n_rows; ++r) out[r] = hsum_avx2(avx2_gemv_lanes<L>(w + r * ws, x, k));
}

template <Layout L, int R, int T>
__attribute__((target("avx2"))) void avx2(const uint8_t* w, int64_t ws, const int8_t* x, int64_t xs, int64_t k,
                                          int32_t* out) {
  if constexpr (R == 1 && T == 1) {
    out[0] = hsum_avx2(avx2_gemv_lanes<L>(w, x, k));
    return;
  }
  const __m256i ones = _mm256_set1_epi16(1);
  constexpr int64_t stride = pair_stride<L>();
  __m256i acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_si256();
  const uint8_t* wp[R];
  for (int r = 0; r < R; ++r) wp[r] = w + r * ws;
  const int8_t* xp[T];
  const int64_t n_groups = k / kGroup, n_pairs = n_groups / 2;
  for (int64_t p0 = 0; p0 < n_pairs; p0 += 4) {  // 16-bit sums of 4 pairs = 8 groups, then widen
    const int64_t p1 = std::min<int64_t>(n_pairs, p0 + 4);
    __m256i a16[R][T];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) a16[r][t] = _mm256_setzero_si256();
    for (int64_t pair = p0; pair < p1; ++pair) {
      // The same bytes of the rows one tile ahead, at least 4 rows: hides DRAM latency that the
      // hardware prefetcher does not (measured on the one-row kernel before it had its own,
      // 6912x2560 TQ2_0, 1 thread: 1 row ahead 10.8-11.1 GB/s, 4 rows 11.7-12.4).
      constexpr int64_t kAheadRows = R < 4 ? 4 : R;
      for (int r = 0; r < R; ++r) {
        const char* ahead = reinterpret_cast<const char*>(wp[r] + pair * stride + kAheadRows * ws);
        _mm_prefetch(ahead, _MM_HINT_T0);
        _mm_prefetch(ahead + 63, _MM_HINT_T0);  // a TQ2_0 block is 66 bytes: it can span 3 lines
      }
      for (int t = 0; t < T; ++t) xp[t] = x + t * xs + pair * 2 * kGroup;
      avx2_group<L, R, T>(wp, pair * stride, xp, a16);
      for (int t = 0; t < T; ++t) xp[t] += kGroup;
      avx2_group<L, R, T>(wp, pair * stride + 32, xp, a16);
    }
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_add_epi32(acc[r][t], _mm256_madd_epi16(a16[r][t], ones));
  }
  if (n_groups & 1) {  // I2_S rows of an odd number of groups
    __m256i a16[R][T];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) a16[r][t] = _mm256_setzero_si256();
    for (int t = 0; t < T; ++t) xp[t] = x + t * xs + (n_groups - 1) * kGroup;
    avx2_group<L, R, T>(wp, n_pairs * stride, xp, a16);
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_add_epi32(acc[r][t], _mm256_madd_epi16(a16[r][t], ones));
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) out[r * T + t] = hsum_avx2(acc[r][t]);
}
}  // namespace

BITNET_TILE_DISPATCH(avx2)

namespace {

}  // namespace

void avx2_gemv_dispatch(Layout layout, const uint8_t* w, int64_t ws, int64_t n_rows, const int8_t* x, int64_t k,
                        int32_t* out) {
  (layout == Layout::kI2S ? avx2_gemv<Layout::kI2S> : avx2_gemv<Layout::kTQ2>)(layout, w, ws, n_rows, x, k, out);
}

namespace {

// A few tokens (a decode step of several sequences): one row at a time, as the GEMV streams
// them, its 2-bit codes decoded once for every token. Over 4 x 2 tiles this reads the rows in
// one stream and decodes each plane once per T tokens instead of once per 2.
template <Layout L, int T>
__attribute__((target("avx2"))) void avx2_rows_multi(const uint8_t* w, int64_t ws, int64_t n_rows, const int8_t* x, int64_t xs, int64_t k,
                     int32_t* out) {
  for (int64_t r = 0; r < n_rows; ++r) avx2<L, 1, T>(w + r * ws, ws, x, xs, k, out + r * T);
}

template <Layout L>
void avx2_multi(const uint8_t* w, int64_t ws, int64_t n_rows, const int8_t* x, int64_t xs, int n_tokens, int64_t k,
                int32_t* out) {
  with_token_count(n_tokens, [&](auto t) { avx2_rows_multi<L, decltype(t)::value>(w, ws, n_rows, x, xs, k, out); });
}

}  // namespace

void avx2_multi_gemv_dispatch(Layout layout, const uint8_t* w, int64_t ws, int64_t n_rows, const int8_t* x, int64_t xs,
                              int n_tokens, int64_t k, int32_t* out) {
  (layout == Layout::kI2S ? avx2_multi<Layout::kI2S> : avx2_multi<Layout::kTQ2>)(w, ws, n_rows, x, xs, n_tokens, k,
                                                                                 out);
}

namespace {

// ---- AVX2 over unpacked codes ----------------------------------------------------------
// Codes already one byte per weight: the loop is a maddubs and a 16-bit add per 32 products, no
// decoding. k <= kUnpackedMaxK keeps the 16-bit sums exact (64 maddubs of at most 2*2*128).

template <Layout L>
__attribute__((target("avx2"))) void unpack_rows_avx2(const uint8_t* row, int64_t g0, int64_t g1, uint8_t* dst) {
  const __m256i mask = _mm256_set1_epi8(3);
  for (int64_t g = g0; g < g1; ++g) {
    const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(group_ptr<L>(row, g)));
    uint8_t* d = dst + (g - g0) * kGroup;
    for (int p = 0; p < 4; ++p) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + 32 * p),
                          _mm256_and_si256(_mm256_srli_epi16(c, plane_shift<L>(p)), mask));
    }
  }
}

// a += maddubs(w, x), the add written out so that GCC keeps each sum in its register (left to
// itself it reassociates the sums and spills them to the stack every iteration).
#define BITNET_MADD_ACC(a, w, x)                                 \
  do {                                                           \
    const __m256i prod_ = _mm256_maddubs_epi16((w), (x));        \
    asm("vpaddw %1, %0, %0" : "+x"(a) : "x"(prod_));             \
  } while (0)

// Any tile size (the 4 x 2 tile, the hot one, is specialised below).
template <int R, int T>
__attribute__((target("avx2"))) void unpacked_avx2(const uint8_t* c, int64_t cs, const int8_t* x, int64_t xs,
                                                   int64_t k, int32_t* acc, int64_t acc_stride) {
  __m256i a16[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) a16[r][t] = _mm256_setzero_si256();
  for (int64_t i = 0; i < k; i += 32) {
    __m256i w[R];
    for (int r = 0; r < R; ++r) w[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + r * cs + i));
    for (int t = 0; t < T; ++t) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + t * xs + i));
      for (int r = 0; r < R; ++r) BITNET_MADD_ACC(a16[r][t], w[r], v);
    }
  }
  const __m256i ones = _mm256_set1_epi16(1);
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[t * acc_stride + r] += hsum_avx2(_mm256_madd_epi16(a16[r][t], ones));
}

// The hot tile: 4 rows x 2 tokens, 8 sums in registers, the 4 rows' codes loaded once per step.
template <>
__attribute__((target("avx2"))) void unpacked_avx2<4, 2>(const uint8_t* c, int64_t cs, const int8_t* x, int64_t xs,
                                                         int64_t k, int32_t* acc, int64_t acc_stride) {
  __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
  const uint8_t *c0 = c, *c1 = c + cs, *c2 = c + 2 * cs, *c3 = c + 3 * cs;
  const int8_t *x0 = x, *x1 = x + xs;
  for (int64_t i = 0; i < k; i += 32) {
    __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c0 + i));
    __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c1 + i));
    __m256i w2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c2 + i));
    __m256i w3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c3 + i));
    asm("" : "+x"(w0), "+x"(w1), "+x"(w2), "+x"(w3));  // loaded once, not once per token
    const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x0 + i));
    const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x1 + i));
    BITNET_MADD_ACC(a00, w0, v0);
    BITNET_MADD_ACC(a10, w1, v0);
    BITNET_MADD_ACC(a20, w2, v0);
    BITNET_MADD_ACC(a30, w3, v0);
    BITNET_MADD_ACC(a01, w0, v1);
    BITNET_MADD_ACC(a11, w1, v1);
    BITNET_MADD_ACC(a21, w2, v1);
    BITNET_MADD_ACC(a31, w3, v1);
  }
  // Widen to 32 bits and reduce the 8 sums into one vector: rows 0-3 of token 0, then of token 1.
  const __m256i ones = _mm256_set1_epi16(1);
  auto wide = [&ones](__m256i a) __attribute__((target("avx2"))) { return _mm256_madd_epi16(a, ones); };
  const __m256i sums =
      hsum8_avx2(wide(a00), wide(a10), wide(a20), wide(a30), wide(a01), wide(a11), wide(a21), wide(a31));
  __m128i* t0 = reinterpret_cast<__m128i*>(acc);
  __m128i* t1 = reinterpret_cast<__m128i*>(acc + acc_stride);
  _mm_storeu_si128(t0, _mm_add_epi32(_mm_loadu_si128(t0), _mm256_castsi256_si128(sums)));
  _mm_storeu_si128(t1, _mm_add_epi32(_mm_loadu_si128(t1), _mm256_extracti128_si256(sums, 1)));
}

#undef BITNET_MADD_ACC

}  // namespace

BITNET_UNPACKED_DISPATCH(unpacked_avx2)

void unpack_avx2(Layout layout, const uint8_t* row, int64_t g0, int64_t g1, uint8_t* dst) {
  return layout == Layout::kI2S ? unpack_rows_avx2<Layout::kI2S>(row, g0, g1, dst)
                                : unpack_rows_avx2<Layout::kTQ2>(row, g0, g1, dst);
}

// The same arithmetic as the scalar loop (float32 product, round half to even, clamp), 32 values
// at a time: the results are identical.
__attribute__((target("avx2"))) float quantize_row_avx2(const float* x, int64_t k, int8_t* q, int32_t* sum) {
  const int64_t k32 = k / 32 * 32;
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 mx = _mm256_setzero_ps();
  for (int64_t i = 0; i < k32; i += 8) mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
  float absmax = _mm_cvtss_f32(m4);
  for (int64_t i = k32; i < k; ++i) absmax = std::max(absmax, std::fabs(x[i]));
  const float scale = absmax > 0.0f ? absmax / 127.0f : 1.0f;
  const float inv = 1.0f / scale;
  const __m256 vinv = _mm256_set1_ps(inv), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  __m256i total = _mm256_setzero_si256();
  for (int64_t i = 0; i < k32; i += 32) {
    __m256i v[4];
    for (int j = 0; j < 4; ++j) {
      __m256 f = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * j), vinv),
                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v[j] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(f, lo), hi));
      total = _mm256_add_epi32(total, v[j]);
    }
    const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), _mm256_permutevar8x32_epi32(bytes, order));
  }
  int32_t s = hsum_avx2(total);
  for (int64_t i = k32; i < k; ++i) {
    const int v = static_cast<int>(std::nearbyint(x[i] * inv));
    q[i] = static_cast<int8_t>(std::clamp(v, -127, 127));
    s += q[i];
  }
  *sum = s;
  return scale;
}

}  // namespace bitnet::kernels::detail

#endif  // BITNET_X86
