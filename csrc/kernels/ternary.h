// Ternary x int8 matrix kernels (csrc/kernels).
//
// Weights are rows of 2-bit codes (code = w + 1, w in {-1, 0, 1}) grouped by 128: a group is
// 32 bytes whose byte j holds the weights j, 32+j, 64+j and 96+j of the group, one per 2-bit
// "plane", so plane p lines up with 32 contiguous activations. Two layouts share that group:
//
//   kI2S  bitnet.cpp's I2_S: groups back to back, plane p at bits 6-2p (high bits first);
//         one scale per matrix.
//   kTQ2  ggml's TQ2_0 blocks as stored in the file (no repacking, the mmap is used as is):
//         two groups then an fp16 scale d per 256 weights (66 bytes), plane p at bits 2p.
//
// The kernels compute exact integer sums of code * x over tiles of rows x tokens; callers
// subtract sum(x) (once per token) and apply the scales. SIMD paths are compiled with
// function target attributes and chosen at run time from the CPU, so a baseline build runs
// on every x86-64 CPU and uses AVX2 or AVX-512 VNNI where present.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bitnet::kernels {

constexpr int kGroup = 128;        // weights per 32-byte group
constexpr int kTq2Block = 256;     // weights per TQ2_0 block
constexpr int kTq2BlockBytes = 66;  // 64 bytes of codes + fp16 scale

enum class Layout { kI2S, kTQ2 };

// Bytes of one row of k weights.
int64_t row_bytes(Layout layout, int64_t k);

// Largest tile the kernels take: kMaxRows rows x kMaxTokens tokens.
constexpr int kMaxRows = 4;
constexpr int kMaxTokens = 4;

// out[r * n_tokens + t] = sum_k code[r][k] * x[t][k] for r < n_rows, t < n_tokens, where row r
// starts at w + r * w_stride and token t at x + t * x_stride.
using TileFn = void (*)(Layout layout, const uint8_t* w, int64_t w_stride, int n_rows, const int8_t* x,
                        int64_t x_stride, int n_tokens, int64_t k, int32_t* out);

// acc[t * acc_stride + r] += sum_k codes[r][k] * x[t][k] over codes unpacked to one byte per weight
// in natural order (see unpack_codes), row r at codes + r * c_stride. k is a multiple of kGroup and
// at most kUnpackedMaxK (AVX2's 16-bit partial sums stay exact up to there). Token-major sums let
// the caller scale a token's rows as one contiguous run.
using UnpackedTileFn = void (*)(const uint8_t* codes, int64_t c_stride, int n_rows, const int8_t* x,
                                int64_t x_stride, int n_tokens, int64_t k, int32_t* acc, int64_t acc_stride);
constexpr int64_t kUnpackedMaxK = 2048;

// out[r] = sum_k code[r][k] * x[k] for the n_rows rows starting at w (w_stride bytes apart): one
// token, the whole run of rows in one call.
using GemvFn = void (*)(Layout layout, const uint8_t* w, int64_t w_stride, int64_t n_rows, const int8_t* x, int64_t k,
                        int32_t* out);

// out[r * n_tokens + t] = sum_k code[r][k] * x[t][k] for n_rows rows and n_tokens <= kMaxMultiTokens
// tokens: the rows streamed as by the GEMV, each row's codes decoded once for those tokens. The
// driver runs larger batches (up to Impl::multi_max_tokens) in chunks of
// Impl::multi_tokens_per_pass over a block of rows in cache. AVX2: chunks of 2 measured fastest
// (6912 x 2560 from memory, 2 threads, ms per
// matrix at 2/4/8/16 tokens: chunks of 2 0.23/0.41/0.86/1.55, of 4 0.23/0.58/1.31/2.29, of 8
// -/0.57/0.95/1.68; the 4 x 2 tiles before: 0.43/0.83/0.93/1.52, one token 0.20).
using MultiGemvFn = void (*)(Layout layout, const uint8_t* w, int64_t w_stride, int64_t n_rows, const int8_t* x,
                             int64_t x_stride, int n_tokens, int64_t k, int32_t* out);
constexpr int kMaxMultiTokens = 8;  // the most tokens per pass of any implementation

struct TernaryMatrix;
struct QuantizedActivations;
using RowsFn = void (*)(const TernaryMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& x, float* y,
                        int64_t y_stride);

struct Impl {
  const char* name;  // "scalar", "avx2", "avx512vnni"
  TileFn tile;
  // Optional: a kernel over unpacked codes, used for batches of tokens (gemm_rows unpacks each
  // block of rows once and runs every token against it).
  UnpackedTileFn unpacked_tile = nullptr;
  // Optional: the one-token kernel over many rows (else one-row tiles).
  GemvFn gemv = nullptr;
  // Optional: the kernel for a few tokens (a decode step of several sequences), taken for
  // batches of 2 to multi_max_tokens tokens.
  MultiGemvFn multi_gemv = nullptr;
  int multi_max_tokens = 0;
  int multi_tokens_per_pass = 2;  // <= kMaxMultiTokens
  // Optional: a whole range of rows for batches of at least rows_min_tokens tokens, with its
  // own blocking (the AMX tile unit); it reads activations in tile order (to_tile_order).
  RowsFn rows = nullptr;
  int rows_min_tokens = 0;
};

// Every implementation compiled in, and whether this CPU can run it.
const Impl& scalar_impl();
const Impl* avx2_impl();        // nullptr when the CPU lacks AVX2 (or the build is not x86-64)
const Impl* avx512vnni_impl();  // nullptr when the CPU lacks AVX-512 F/BW/VL + VNNI
const Impl* amx_impl();         // the VNNI kernels + AMX-INT8 for batches; nullptr without AMX
const Impl* neon_impl();        // nullptr unless built for AArch64
// The fastest one this CPU runs.
const Impl& best_impl();
// "auto" or one of the names above; nullptr when unknown or not runnable here.
const Impl* impl_by_name(const char* name);

bool cpu_has_avx2();
// AArch64 with the dot-product extension (sdot): the NEON batch kernel uses it.
bool cpu_has_neon_dotprod();

// Writes the codes (0..2) of groups [g0, g1) of a row to dst, one byte per weight in natural
// order: dst[(g - g0) * kGroup + i] is the code of weight g * kGroup + i.
void unpack_codes(Layout layout, const uint8_t* row, int64_t g0, int64_t g1, uint8_t* dst);

// Quantized activations of n tokens: q rows of k int8 (stride x_stride bytes), x ~= q * scale,
// and sum = sum_k q (subtracted from code sums, since codes are w + 1). tile_order: the rows are
// in to_tile_order's order (what Impl::rows reads; gemm_rows reorders a copy when they are not).
struct QuantizedActivations {
  const int8_t* q;
  int64_t stride;
  const float* scale;
  const int32_t* sum;
  int64_t n;
  bool tile_order = false;
};

// The order of k values (k a multiple of kGroup) that Impl::rows reads: within each group of
// 128, dst[4q + i] = src[32i + q], the i-th code of the group's packed byte q next to its
// neighbours (both layouts keep weights q, 32 + q, 64 + q and 96 + q in byte q).
void to_tile_order(const int8_t* src, int64_t k, int8_t* dst);

// Per-token absmax quantization of one row of k floats to int8 in [-127, 127]; returns the
// scale (absmax / 127, or 1 for an all-zero row) and writes the sum of q to *sum.
float quantize_row(const float* x, int64_t k, int8_t* q, int32_t* sum);
float quantize_row_scalar(const float* x, int64_t k, int8_t* q, int32_t* sum);  // the reference

// Weights as the kernels see them. Rows use one scale each: row_scales[r] when given, else
// `scale` for kI2S, and for kTQ2 the d of the row's first block (the caller has checked that
// every block of a row has the same d).
struct TernaryMatrix {
  Layout layout;
  const uint8_t* data;
  int64_t rows;
  int64_t k;
  int64_t stride;  // bytes between rows
  float scale;     // kI2S without row_scales
  const float* row_scales = nullptr;
};

float row_scale(const TernaryMatrix& w, int64_t row);

// How a batch runs: kAuto takes the unpacked codes for 4 tokens or more when the implementation
// has an unpacked kernel; the others force one path (benchmarks and tests compare them).
enum class BatchPath { kAuto, kPacked, kUnpacked, kMulti, kRows };

// Whether gemm_rows runs a batch of n tokens on impl.rows (so its activations are best quantized
// in tile order once, rather than reordered by every call).
bool takes_rows_path(const Impl& impl, int64_t n, BatchPath path = BatchPath::kAuto);

// y[t * y_stride + r] = (w[r] . x[t]) for rows [r0, r1) and every token, on one thread.
void gemm_rows(const Impl& impl, const TernaryMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& x,
               float* y, int64_t y_stride, BatchPath path = BatchPath::kAuto);

// The same for every row, split over n_threads threads of the kernels' own pool.
void gemm(const Impl& impl, const TernaryMatrix& w, const QuantizedActivations& x, float* y, int64_t y_stride,
          int n_threads, BatchPath path = BatchPath::kAuto);

// Layout conversions of one row of k codes (k a multiple of 256 for TQ2_0); `d` is written to
// every TQ2_0 block.
void i2s_row_to_tq2(const uint8_t* src, int64_t k, uint16_t d_fp16, uint8_t* dst);
void tq2_row_to_i2s(const uint8_t* src, int64_t k, uint8_t* dst);

}  // namespace bitnet::kernels
