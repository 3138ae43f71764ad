#include "kernels/ternary.h"

#include "kernels/fp16.h"
#include "kernels/layout.h"
#include "kernels/thread_pool.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define BITNET_X86 1
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#define BITNET_NEON 1
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)  // the Linux AArch64 hwcap bit of the dot-product extension
#endif
#endif
#endif

namespace bitnet::kernels {

namespace {

// ---- scalar reference -------------------------------------------------------------------

template <Layout L>
int32_t dot_scalar(const uint8_t* row, const int8_t* x, int64_t k) {
  int32_t sum = 0;
  for (int64_t g = 0; g < k / kGroup; ++g) {
    const uint8_t* codes = group_ptr<L>(row, g);
    const int8_t* xg = x + g * kGroup;
    for (int p = 0; p < 4; ++p) {
      const int shift = plane_shift<L>(p);
      for (int j = 0; j < 32; ++j) sum += ((codes[j] >> shift) & 3) * xg[32 * p + j];
    }
  }
  return sum;
}

void tile_scalar(Layout layout, const uint8_t* w, int64_t w_stride, int n_rows, const int8_t* x, int64_t x_stride,
                 int n_tokens, int64_t k, int32_t* out) {
  for (int r = 0; r < n_rows; ++r) {
    for (int t = 0; t < n_tokens; ++t) {
      const uint8_t* row = w + r * w_stride;
      const int8_t* xt = x + t * x_stride;
      out[r * n_tokens + t] = layout == Layout::kI2S ? dot_scalar<Layout::kI2S>(row, xt, k)
                                                     : dot_scalar<Layout::kTQ2>(row, xt, k);
    }
  }
}

void unpacked_tile_scalar(const uint8_t* codes, int64_t c_stride, int n_rows, const int8_t* x, int64_t x_stride,
                          int n_tokens, int64_t k, int32_t* acc, int64_t acc_stride) {
  for (int r = 0; r < n_rows; ++r) {
    for (int t = 0; t < n_tokens; ++t) {
      int32_t sum = 0;
      for (int64_t i = 0; i < k; ++i) sum += codes[r * c_stride + i] * x[t * x_stride + i];
      acc[t * acc_stride + r] += sum;
    }
  }
}

template <Layout L>
void unpack_scalar(const uint8_t* row, int64_t g0, int64_t g1, uint8_t* dst) {
  for (int64_t g = g0; g < g1; ++g) {
    const uint8_t* codes = group_ptr<L>(row, g);
    uint8_t* d = dst + (g - g0) * kGroup;
    for (int p = 0; p < 4; ++p) {
      for (int j = 0; j < 32; ++j) d[32 * p + j] = (codes[j] >> plane_shift<L>(p)) & 3;
    }
  }
}

// Instantiates tile kernel template F for every (layout, rows <= kMaxRows, tokens <= kMaxTokens)
// and dispatches at run time on the tile's size.
using KernelPtr = void (*)(const uint8_t*, int64_t, const int8_t*, int64_t, int64_t, int32_t*);
#define BITNET_TILE_DISPATCH(F)                                                                           \
  template <Layout L>                                                                                     \
  constexpr KernelPtr F##_table[kMaxRows][kMaxTokens] = {                                                 \
      {F<L, 1, 1>, F<L, 1, 2>, F<L, 1, 3>, F<L, 1, 4>},                                                   \
      {F<L, 2, 1>, F<L, 2, 2>, F<L, 2, 3>, F<L, 2, 4>},                                                   \
      {F<L, 3, 1>, F<L, 3, 2>, F<L, 3, 3>, F<L, 3, 4>},                                                   \
      {F<L, 4, 1>, F<L, 4, 2>, F<L, 4, 3>, F<L, 4, 4>},                                                   \
  };                                                                                                      \
  void F##_tile(Layout layout, const uint8_t* w, int64_t ws, int nr, const int8_t* x, int64_t xs, int nt, \
                int64_t k, int32_t* out) {                                                                \
    const KernelPtr fn = layout == Layout::kI2S ? F##_table<Layout::kI2S>[nr - 1][nt - 1]                 \
                                                : F##_table<Layout::kTQ2>[nr - 1][nt - 1];                \
    fn(w, ws, x, xs, k, out);                                                                             \
  }
static_assert(kMaxRows == 4 && kMaxTokens == 4, "BITNET_TILE_DISPATCH lists 4 x 4 tile sizes");

// The same for the kernels over unpacked codes: template F<R, T> -> F_tile, an UnpackedTileFn.
using UnpackedPtr = void (*)(const uint8_t*, int64_t, const int8_t*, int64_t, int64_t, int32_t*, int64_t);
#define BITNET_UNPACKED_DISPATCH(F)                                                                      \
  constexpr UnpackedPtr F##_table[kMaxRows][kMaxTokens] = {                                              \
      {F<1, 1>, F<1, 2>, F<1, 3>, F<1, 4>},                                                              \
      {F<2, 1>, F<2, 2>, F<2, 3>, F<2, 4>},                                                              \
      {F<3, 1>, F<3, 2>, F<3, 3>, F<3, 4>},                                                              \
      {F<4, 1>, F<4, 2>, F<4, 3>, F<4, 4>},                                                              \
  };                                                                                                     \
  void F##_tile(const uint8_t* c, int64_t cs, int nr, const int8_t* x, int64_t xs, int nt, int64_t k,   \
                int32_t* acc, int64_t acc_stride) {                                                      \
    F##_table[nr - 1][nt - 1](c, cs, x, xs, k, acc, acc_stride);                                         \
  }

#if BITNET_X86

// ---- AVX2 -------------------------------------------------------------------------------
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
BITNET_TILE_DISPATCH(avx2)

void avx2_gemv_dispatch(Layout layout, const uint8_t* w, int64_t ws, int64_t n_rows, const int8_t* x, int64_t k,
                        int32_t* out) {
  (layout == Layout::kI2S ? avx2_gemv<Layout::kI2S> : avx2_gemv<Layout::kTQ2>)(layout, w, ws, n_rows, x, k, out);
}

// ---- AVX2 over unpacked codes ----------------------------------------------------------
// Codes already one byte per weight: the loop is a maddubs and a 16-bit add per 32 products, no
// decoding. k <= kUnpackedMaxK keeps the 16-bit sums exact (64 maddubs of at most 2*2*128).

template <Layout L>
__attribute__((target("avx2"))) void unpack_avx2(const uint8_t* row, int64_t g0, int64_t g1, uint8_t* dst) {
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

BITNET_UNPACKED_DISPATCH(unpacked_avx2)

// ---- AVX-512 VNNI ------------------------------------------------------------------------
// vpdpbusd multiplies unsigned codes by signed activations and accumulates in 32 bits. A zmm
// register holds two consecutive groups' codes (64 contiguous bytes in both layouts: a TQ2_0
// block's qs, or two I2_S groups); the activations of plane p of both groups are joined to match.

#define BITNET_VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

#include "kernels/vnni_tile.inc"
BITNET_TILE_DISPATCH(vnni)

BITNET_UNPACKED_DISPATCH(vnni_unpacked)

bool cpu_has_avx512vnni() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}

#endif  // BITNET_X86

#if BITNET_NEON
// ---- NEON (AArch64 baseline: no dot-product extension needed) ------------------------------

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
BITNET_TILE_DISPATCH(neon)

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
BITNET_TILE_DISPATCH(neon_sdot)

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

BITNET_UNPACKED_DISPATCH(neon_unpacked)
BITNET_UNPACKED_DISPATCH(neon_sdot_unpacked)
#endif  // BITNET_NEON

}  // namespace

int64_t row_bytes(Layout layout, int64_t k) {
  return layout == Layout::kI2S ? k / 4 : k / kTq2Block * kTq2BlockBytes;
}

const Impl& scalar_impl() {
  static const Impl impl{"scalar", &tile_scalar, &unpacked_tile_scalar};
  return impl;
}

#if BITNET_X86
bool cpu_has_avx2() { return __builtin_cpu_supports("avx2"); }

const Impl* avx2_impl() {
  static const Impl impl{"avx2", &avx2_tile, &unpacked_avx2_tile, &avx2_gemv_dispatch};
  return cpu_has_avx2() ? &impl : nullptr;
}

const Impl* avx512vnni_impl() {
  static const Impl impl{"avx512vnni", &vnni_tile, &vnni_unpacked_tile};
  return cpu_has_avx512vnni() ? &impl : nullptr;
}
#else
bool cpu_has_avx2() { return false; }
const Impl* avx2_impl() { return nullptr; }
const Impl* avx512vnni_impl() { return nullptr; }
#endif

#if BITNET_NEON
bool cpu_has_neon_dotprod() {
#if defined(__linux__)
  return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
  return false;  // elsewhere the baseline NEON kernels run
#endif
}

const Impl* neon_impl() {
  static const bool dotprod = cpu_has_neon_dotprod();
  static const Impl impl{"neon", dotprod ? &neon_sdot_tile : &neon_tile,
                         dotprod ? &neon_sdot_unpacked_tile : &neon_unpacked_tile};
  return &impl;
}
#else
bool cpu_has_neon_dotprod() { return false; }
const Impl* neon_impl() { return nullptr; }
#endif

const Impl& best_impl() {
  if (const Impl* impl = avx512vnni_impl()) return *impl;
  if (const Impl* impl = avx2_impl()) return *impl;
  if (const Impl* impl = neon_impl()) return *impl;
  return scalar_impl();
}

const Impl* impl_by_name(const char* name) {
  const std::string n(name);
  if (n == "auto") return &best_impl();
  if (n == "scalar") return &scalar_impl();
  if (n == "avx2") return avx2_impl();
  if (n == "avx512vnni") return avx512vnni_impl();
  if (n == "neon") return neon_impl();
  return nullptr;
}

float quantize_row_scalar(const float* x, int64_t k, int8_t* q, int32_t* sum) {
  float absmax = 0.0f;
  for (int64_t i = 0; i < k; ++i) absmax = std::max(absmax, std::fabs(x[i]));
  const float scale = absmax > 0.0f ? absmax / 127.0f : 1.0f;
  const float inv = 1.0f / scale;
  int32_t s = 0;
  for (int64_t i = 0; i < k; ++i) {
    const int v = static_cast<int>(std::nearbyint(x[i] * inv));
    q[i] = static_cast<int8_t>(std::clamp(v, -127, 127));
    s += q[i];
  }
  *sum = s;
  return scale;
}

namespace {

#if BITNET_X86
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
#endif

}  // namespace

float quantize_row(const float* x, int64_t k, int8_t* q, int32_t* sum) {
#if BITNET_X86
  static const bool avx2 = cpu_has_avx2();
  if (avx2) return quantize_row_avx2(x, k, q, sum);
#endif
  return quantize_row_scalar(x, k, q, sum);
}

float row_scale(const TernaryMatrix& w, int64_t row) {
  if (w.row_scales != nullptr) return w.row_scales[row];
  if (w.layout == Layout::kI2S) return w.scale;
  return fp16_to_fp32(w.data + row * w.stride + 64);
}

void unpack_codes(Layout layout, const uint8_t* row, int64_t g0, int64_t g1, uint8_t* dst) {
#if BITNET_X86
  static const bool avx2 = cpu_has_avx2();
  if (avx2) {
    return layout == Layout::kI2S ? unpack_avx2<Layout::kI2S>(row, g0, g1, dst)
                                  : unpack_avx2<Layout::kTQ2>(row, g0, g1, dst);
  }
#endif
  return layout == Layout::kI2S ? unpack_scalar<Layout::kI2S>(row, g0, g1, dst)
                                : unpack_scalar<Layout::kTQ2>(row, g0, g1, dst);
}

namespace {

// Batches from this many tokens on run over unpacked codes (when the implementation has such a
// kernel): unpacking a block of rows costs about as much as one token pair over packed codes.
constexpr int64_t kUnpackMinTokens = 4;
// Rows x weights unpacked at a time: 16 KiB of codes stay in L1 next to a token pair's 4 KiB of
// activations while the block's four 4 x 2 tiles run.
constexpr int kUnpackRows = 8;
constexpr int64_t kUnpackK = kUnpackedMaxK;

void gemm_rows_packed(const Impl& impl, const TernaryMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& x,
                      float* y, int64_t y_stride) {
  // One token (memory-bound): one row at a time, a single stream the hardware prefetcher follows
  // (4-row tiles were ~10% slower in generation at 1 thread). Several tokens: 4 x 2 tiles share
  // activation loads and decoded codes (measured fastest of 2x2, 2x4, 3x3, 4x3, 3x4 and 4x4: AVX2
  // has 16 registers: 8 accumulators, 4 rows of codes, 2 activations, the mask and a temporary).
  // Blocks of rows stay in cache while the tokens stream.
  if (x.n == 1 && impl.gemv != nullptr) {
    constexpr int64_t kRows = 64;
    int32_t dots[kRows];
    float scales[kRows];
    const int32_t sum = x.sum[0];
    const float xs = x.scale[0];
    for (int64_t rb = r0; rb < r1; rb += kRows) {
      const int64_t nr = std::min(kRows, r1 - rb);
      impl.gemv(w.layout, w.data + rb * w.stride, w.stride, nr, x.q, w.k, dots);
      // Scales read after the dot products, as below.
      for (int64_t i = 0; i < nr; ++i) scales[i] = row_scale(w, rb + i);
      for (int64_t i = 0; i < nr; ++i) y[rb + i] = static_cast<float>(dots[i] - sum) * scales[i] * xs;
    }
    return;
  }
  const int tile_rows = x.n == 1 ? 1 : 4;
  const int tile_tokens = x.n == 1 ? 1 : 2;
  constexpr int64_t kRowBlock = 64;
  int32_t dots[kMaxRows * kMaxTokens];
  float scales[kRowBlock];  // of the block's rows, read once rather than once per token pair
  for (int64_t rb = r0; rb < r1; rb += kRowBlock) {
    const int64_t re = std::min(r1, rb + kRowBlock);
    for (int64_t t = 0; t < x.n; t += tile_tokens) {
      const int nt = static_cast<int>(std::min<int64_t>(tile_tokens, x.n - t));
      for (int64_t r = rb; r < re; r += tile_rows) {
        const int nr = static_cast<int>(std::min<int64_t>(tile_rows, re - r));
        impl.tile(w.layout, w.data + r * w.stride, w.stride, nr, x.q + t * x.stride, x.stride, nt, w.k, dots);
        // Read after the tile: the rows are in cache by now. Read ahead of it, each TQ2_0 scale
        // was a cache miss of its own (11% of generation time).
        if (t == 0) {
          for (int i = 0; i < nr; ++i) scales[r - rb + i] = row_scale(w, r + i);
        }
        const float* rs = scales + (r - rb);
        for (int j = 0; j < nt; ++j) {
          float* yt = y + (t + j) * y_stride + r;
          const int32_t sum = x.sum[t + j];
          const float xs = x.scale[t + j];
          for (int i = 0; i < nr; ++i) yt[i] = static_cast<float>(dots[i * nt + j] - sum) * rs[i] * xs;
        }
      }
    }
  }
}

void gemm_rows_unpacked(const Impl& impl, const TernaryMatrix& w, int64_t r0, int64_t r1,
                        const QuantizedActivations& x, float* y, int64_t y_stride) {
  // Blocks of kUnpackRows rows x up to kUnpackK weights are unpacked once, then every token pair
  // runs against them in 4 x 2 tiles, adding to acc[t * kUnpackRows + r] (token-major, so that
  // each token's rows are scaled as one contiguous run).
  alignas(64) uint8_t codes[kUnpackRows * kUnpackK];
  static thread_local std::vector<int32_t> acc_storage;
  std::vector<int32_t>& acc_vec = acc_storage;  // one TLS lookup, not one per use
  acc_vec.resize(static_cast<size_t>(x.n * kUnpackRows));
  int32_t* acc = acc_vec.data();
  // Chunks of equal length: a short last chunk runs the tiles' fixed costs over few weights.
  const int64_t n_groups = w.k / kGroup, max_groups = kUnpackK / kGroup;
  const int64_t n_chunks = (n_groups + max_groups - 1) / max_groups;
  const int64_t chunk_groups = (n_groups + n_chunks - 1) / n_chunks;
  float scales[kUnpackRows];
  for (int64_t rb = r0; rb < r1; rb += kUnpackRows) {
    const int nrb = static_cast<int>(std::min<int64_t>(kUnpackRows, r1 - rb));
    std::fill(acc, acc + x.n * kUnpackRows, 0);
    for (int64_t g0 = 0; g0 < n_groups; g0 += chunk_groups) {
      const int64_t g1 = std::min(n_groups, g0 + chunk_groups);
      const int64_t k0 = g0 * kGroup, kc = (g1 - g0) * kGroup;
      for (int r = 0; r < nrb; ++r) unpack_codes(w.layout, w.data + (rb + r) * w.stride, g0, g1, codes + r * kUnpackK);
      for (int64_t t = 0; t < x.n; t += 2) {
        const int nt = static_cast<int>(std::min<int64_t>(2, x.n - t));
        for (int r = 0; r < nrb; r += 4) {
          impl.unpacked_tile(codes + r * kUnpackK, kUnpackK, std::min(4, nrb - r), x.q + t * x.stride + k0, x.stride,
                             nt, kc, acc + t * kUnpackRows + r, kUnpackRows);
        }
      }
    }
    for (int r = 0; r < nrb; ++r) scales[r] = row_scale(w, rb + r);
    for (int64_t t = 0; t < x.n; ++t) {
      const int32_t* dots = acc + t * kUnpackRows;
      const int32_t sum = x.sum[t];
      const float xs = x.scale[t];
      float* yt = y + t * y_stride + rb;
      for (int r = 0; r < nrb; ++r) yt[r] = static_cast<float>(dots[r] - sum) * scales[r] * xs;
    }
  }
}

}  // namespace

void gemm_rows(const Impl& impl, const TernaryMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& x,
               float* y, int64_t y_stride, BatchPath path) {
  const bool unpacked = impl.unpacked_tile != nullptr &&
                        (path == BatchPath::kUnpacked || (path == BatchPath::kAuto && x.n >= kUnpackMinTokens));
  if (unpacked) {
    gemm_rows_unpacked(impl, w, r0, r1, x, y, y_stride);
  } else {
    gemm_rows_packed(impl, w, r0, r1, x, y, y_stride);
  }
}

void gemm(const Impl& impl, const TernaryMatrix& w, const QuantizedActivations& x, float* y, int64_t y_stride,
          int n_threads, BatchPath path) {
  // Chunks of rows (multiples of 4), several per thread so uneven thread speeds even out.
  const int64_t n_quads = (w.rows + 3) / 4;
  const int n_chunks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(n_quads, std::max(1, n_threads) * 4)));
  const int64_t chunk = (n_quads + n_chunks - 1) / n_chunks * 4;
  ThreadPool::instance().run(n_chunks, n_threads, [&](int i) {
    const int64_t r0 = i * chunk;
    if (r0 < w.rows) gemm_rows(impl, w, r0, std::min(w.rows, r0 + chunk), x, y, y_stride, path);
  });
}

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
