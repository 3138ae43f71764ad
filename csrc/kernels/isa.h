// Internal to csrc/kernels: what each instruction set's file defines for the registry
// (ternary.cpp) and the driver (gemm.cpp), and the macros that instantiate tile kernels.
// One file per instruction set: ternary_scalar.cpp, ternary_avx2.cpp, ternary_avx512vnni.cpp,
// ternary_neon.cpp. Each SIMD function carries its own target attribute, so every file compiles
// in a baseline build and the registry picks what the CPU runs.
#pragma once

#include <cstdint>
#include <type_traits>

#include "kernels/layout.h"
#include "kernels/ternary.h"

#if defined(__x86_64__) || defined(_M_X64)
#define BITNET_X86 1
#endif
#if defined(__aarch64__)
#define BITNET_NEON 1
#endif

namespace bitnet::kernels::detail {

// f(std::integral_constant<int, T>{}) for T = n_tokens, 1 <= T <= kMaxMultiTokens (more: the
// largest): how a multi-token kernel picks its compile-time token count.
template <typename F>
inline void with_token_count(int n_tokens, F&& f) {
  static_assert(kMaxMultiTokens == 8, "with_token_count lists 1..8");
  switch (n_tokens) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 7: return f(std::integral_constant<int, 7>{});
    default: return f(std::integral_constant<int, 8>{});
  }
}

// ---- scalar (ternary_scalar.cpp): the reference every other implementation is tested against

void tile_scalar(Layout layout, const uint8_t* w, int64_t w_stride, int n_rows, const int8_t* x, int64_t x_stride,
                 int n_tokens, int64_t k, int32_t* out);
void unpacked_tile_scalar(const uint8_t* codes, int64_t c_stride, int n_rows, const int8_t* x, int64_t x_stride,
                          int n_tokens, int64_t k, int32_t* acc, int64_t acc_stride);
void unpack_scalar(Layout layout, const uint8_t* row, int64_t g0, int64_t g1, uint8_t* dst);

#if BITNET_X86
// ---- AVX2 (ternary_avx2.cpp)
void avx2_tile(Layout layout, const uint8_t* w, int64_t ws, int nr, const int8_t* x, int64_t xs, int nt, int64_t k,
               int32_t* out);
void unpacked_avx2_tile(const uint8_t* c, int64_t cs, int nr, const int8_t* x, int64_t xs, int nt, int64_t k,
                        int32_t* acc, int64_t acc_stride);
void vnni_multi_gemv_dispatch(Layout layout, const uint8_t* w, int64_t ws, int64_t n_rows, const int8_t* x,
                              int64_t xs, int n_tokens, int64_t k, int32_t* out);
void avx2_multi_gemv_dispatch(Layout layout, const uint8_t* w, int64_t ws, int64_t n_rows, const int8_t* x,
                              int64_t xs, int n_tokens, int64_t k, int32_t* out);
void avx2_gemv_dispatch(Layout layout, const uint8_t* w, int64_t ws, int64_t n_rows, const int8_t* x, int64_t k,
                        int32_t* out);
void unpack_avx2(Layout layout, const uint8_t* row, int64_t g0, int64_t g1, uint8_t* dst);
float quantize_row_avx2(const float* x, int64_t k, int8_t* q, int32_t* sum);

// ---- AMX-INT8 (ternary_amx.cpp): for batches, beside the AVX-512 VNNI kernels
bool cpu_has_amx();  // the CPU has AMX-TILE and AMX-INT8, and Linux granted the tile registers
void amx_rows(const TernaryMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& x, float* y,
              int64_t y_stride);

// ---- AVX-512 VNNI (ternary_avx512vnni.cpp)
bool cpu_has_avx512vnni();
void vnni_tile(Layout layout, const uint8_t* w, int64_t ws, int nr, const int8_t* x, int64_t xs, int nt, int64_t k,
               int32_t* out);
void vnni_unpacked_tile(const uint8_t* c, int64_t cs, int nr, const int8_t* x, int64_t xs, int nt, int64_t k,
                        int32_t* acc, int64_t acc_stride);
#endif

#if BITNET_NEON
// ---- NEON (ternary_neon.cpp): baseline, and with the dot-product extension (sdot)
void neon_tile(Layout layout, const uint8_t* w, int64_t ws, int nr, const int8_t* x, int64_t xs, int nt, int64_t k,
               int32_t* out);
void neon_sdot_tile(Layout layout, const uint8_t* w, int64_t ws, int nr, const int8_t* x, int64_t xs, int nt,
                    int64_t k, int32_t* out);
void neon_unpacked_tile(const uint8_t* c, int64_t cs, int nr, const int8_t* x, int64_t xs, int nt, int64_t k,
                        int32_t* acc, int64_t acc_stride);
void neon_sdot_unpacked_tile(const uint8_t* c, int64_t cs, int nr, const int8_t* x, int64_t xs, int nt, int64_t k,
                             int32_t* acc, int64_t acc_stride);
#endif

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

}  // namespace bitnet::kernels::detail
