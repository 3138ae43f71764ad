// The AVX-512 VNNI kernels (vpdpbusd): the tiles themselves are in vnni_tile.inc, which
// tests/native/vnni_emulated.cpp also compiles against software intrinsics.
#include "kernels/isa.h"

#if BITNET_X86

#include <immintrin.h>

#include <algorithm>

namespace bitnet::kernels::detail {

// vpdpbusd multiplies unsigned codes by signed activations and accumulates in 32 bits. A zmm
// register holds two consecutive groups' codes (64 contiguous bytes in both layouts: a TQ2_0
// block's qs, or two I2_S groups); the activations of plane p of both groups are joined to match.

#define BITNET_VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

namespace {
#include "kernels/vnni_tile.inc"
}  // namespace

BITNET_TILE_DISPATCH(vnni)

BITNET_UNPACKED_DISPATCH(vnni_unpacked)

namespace {

// A few tokens: one row at a time as a 1 x T tile (two groups per zmm, each plane decoded once
// for the T tokens, vpdpbusd into 32-bit sums), the rows 4 ahead prefetched whole: the tiles
// have no prefetch of their own, and a row stream without one waits on DRAM.
template <Layout L, int T>
BITNET_VNNI_TARGET void vnni_rows_multi(const uint8_t* w, int64_t ws, int64_t n_rows, const int8_t* x, int64_t xs,
                                        int64_t k, int32_t* out) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const char* ahead = reinterpret_cast<const char*>(w + (r + 4) * ws);
    for (int64_t b = 0; b < ws; b += 64) _mm_prefetch(ahead + b, _MM_HINT_T0);
    vnni<L, 1, T>(w + r * ws, ws, x, xs, k, out + r * T);
  }
}

template <Layout L>
void vnni_multi(const uint8_t* w, int64_t ws, int64_t n_rows, const int8_t* x, int64_t xs, int n_tokens, int64_t k,
                int32_t* out) {
  with_token_count(n_tokens, [&](auto t) { vnni_rows_multi<L, decltype(t)::value>(w, ws, n_rows, x, xs, k, out); });
}

}  // namespace

void vnni_multi_gemv_dispatch(Layout layout, const uint8_t* w, int64_t ws, int64_t n_rows, const int8_t* x, int64_t xs,
                              int n_tokens, int64_t k, int32_t* out) {
  (layout == Layout::kI2S ? vnni_multi<Layout::kI2S> : vnni_multi<Layout::kTQ2>)(w, ws, n_rows, x, xs, n_tokens, k,
                                                                                 out);
}

bool cpu_has_avx512vnni() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}

}  // namespace bitnet::kernels::detail

#endif  // BITNET_X86
