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

bool cpu_has_avx512vnni() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}

}  // namespace bitnet::kernels::detail

#endif  // BITNET_X86
