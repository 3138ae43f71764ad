// The GEMM driver: how rows and tokens are cut into tiles, when codes are unpacked, how the
// integer sums become floats, and how rows are spread over the kernels' thread pool.
#include <algorithm>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <emmintrin.h>
#endif

#include "kernels/fp16.h"
#include "kernels/isa.h"
#include "kernels/thread_pool.h"

namespace bitnet::kernels {

using namespace detail;

float row_scale(const TernaryMatrix& w, int64_t row) {
  if (w.row_scales != nullptr) return w.row_scales[row];
  if (w.layout == Layout::kI2S) return w.scale;
  return fp16_to_fp32(w.data + row * w.stride + 64);
}

void unpack_codes(Layout layout, const uint8_t* row, int64_t g0, int64_t g1, uint8_t* dst) {
#if BITNET_X86
  static const bool avx2 = cpu_has_avx2();
  if (avx2) return unpack_avx2(layout, row, g0, g1, dst);
#endif
  return unpack_scalar(layout, row, g0, g1, dst);
}

void to_tile_order(const int8_t* src, int64_t k, int8_t* dst) {
  for (int64_t g = 0; g < k; g += kGroup, src += kGroup, dst += kGroup) {
#if BITNET_X86
    // Per 16 bytes q of the four planes: bytes, then pairs of bytes interleaved (SSE2).
    for (int h = 0; h < 32; h += 16) {
      const __m128i p0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + h));
      const __m128i p1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 32 + h));
      const __m128i p2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 64 + h));
      const __m128i p3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 96 + h));
      const __m128i a = _mm_unpacklo_epi8(p0, p1), b = _mm_unpackhi_epi8(p0, p1);
      const __m128i c = _mm_unpacklo_epi8(p2, p3), d = _mm_unpackhi_epi8(p2, p3);
      auto* out = reinterpret_cast<__m128i*>(dst + 4 * h);
      _mm_storeu_si128(out, _mm_unpacklo_epi16(a, c));
      _mm_storeu_si128(out + 1, _mm_unpackhi_epi16(a, c));
      _mm_storeu_si128(out + 2, _mm_unpacklo_epi16(b, d));
      _mm_storeu_si128(out + 3, _mm_unpackhi_epi16(b, d));
    }
#else
    for (int q = 0; q < 32; ++q) {
      for (int i = 0; i < 4; ++i) dst[4 * q + i] = src[32 * i + q];
    }
#endif
  }
}

bool takes_rows_path(const Impl& impl, int64_t n, BatchPath path) {
  if (path == BatchPath::kMulti || (path == BatchPath::kAuto && n > 1 && n <= impl.multi_max_tokens)) {
    if (impl.multi_gemv != nullptr) return false;
  }
  return impl.rows != nullptr && (path == BatchPath::kRows || (path == BatchPath::kAuto && n >= impl.rows_min_tokens));
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

// A few tokens: blocks of rows streamed once by the multi-token kernel, each block run for
// every chunk of up to impl.multi_tokens_per_pass tokens while it is in cache.
void gemm_rows_multi(const Impl& impl, const TernaryMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& x,
                     float* y, int64_t y_stride) {
  constexpr int64_t kRows = 32;
  int32_t dots[kRows * kMaxMultiTokens];
  float scales[kRows];
  for (int64_t rb = r0; rb < r1; rb += kRows) {
    const int64_t nr = std::min(kRows, r1 - rb);
    for (int64_t t0 = 0; t0 < x.n; t0 += impl.multi_tokens_per_pass) {
      const int nt = static_cast<int>(std::min<int64_t>(impl.multi_tokens_per_pass, x.n - t0));
      impl.multi_gemv(w.layout, w.data + rb * w.stride, w.stride, nr, x.q + t0 * x.stride, x.stride, nt, w.k, dots);
      if (t0 == 0) {
        for (int64_t i = 0; i < nr; ++i) scales[i] = row_scale(w, rb + i);
      }
      for (int j = 0; j < nt; ++j) {
        float* yt = y + (t0 + j) * y_stride + rb;
        const int32_t sum = x.sum[t0 + j];
        const float xs = x.scale[t0 + j];
        for (int64_t i = 0; i < nr; ++i) yt[i] = static_cast<float>(dots[i * nt + j] - sum) * scales[i] * xs;
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
  if (takes_rows_path(impl, x.n, path)) {
    if (x.tile_order) return impl.rows(w, r0, r1, x, y, y_stride);
    static thread_local std::vector<int8_t> ordered;
    ordered.resize(static_cast<size_t>(x.n * w.k));
    for (int64_t t = 0; t < x.n; ++t) to_tile_order(x.q + t * x.stride, w.k, ordered.data() + t * w.k);
    QuantizedActivations xo = x;
    xo.q = ordered.data();
    xo.stride = w.k;
    xo.tile_order = true;
    return impl.rows(w, r0, r1, xo, y, y_stride);
  }
  if (x.tile_order) {  // the other paths read natural order (no caller of ours gets here)
    static thread_local std::vector<int8_t> natural;
    natural.resize(static_cast<size_t>(x.n * w.k));
    for (int64_t t = 0; t < x.n; ++t) {
      const int8_t* src = x.q + t * x.stride;
      int8_t* dst = natural.data() + t * w.k;
      for (int64_t g = 0; g < w.k; g += kGroup) {
        for (int q = 0; q < 32; ++q) {
          for (int i = 0; i < 4; ++i) dst[g + 32 * i + q] = src[g + 4 * q + i];
        }
      }
    }
    QuantizedActivations xn = x;
    xn.q = natural.data();
    xn.stride = w.k;
    xn.tile_order = false;
    return gemm_rows(impl, w, r0, r1, xn, y, y_stride, path);
  }
  if (path == BatchPath::kMulti || (path == BatchPath::kAuto && x.n > 1 && x.n <= impl.multi_max_tokens)) {
    if (impl.multi_gemv != nullptr) return gemm_rows_multi(impl, w, r0, r1, x, y, y_stride);
  }
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

}  // namespace bitnet::kernels
