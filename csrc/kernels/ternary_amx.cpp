// The AMX-INT8 batch kernel (Sapphire Rapids and later): amx_rows.inc holds it, which
// tests/native/amx_emulated.cpp also compiles against software tiles. Linux gives a process the
// tile registers only after it asks (arch_prctl ARCH_REQ_XCOMP_PERM): cpu_has_amx() asks once,
// and a CPU or kernel that says no leaves the VNNI kernels in charge.
#include "kernels/isa.h"

#if BITNET_X86

#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace bitnet::kernels::detail {

#define BITNET_AMX_TARGET __attribute__((target("amx-tile,amx-int8,avx512f")))

namespace {

// b_tile_reference with AVX-512: the 16 rows' 64 bytes as 16 x 16 int32, transposed in four
// rounds of shuffles (the weights' 4-byte groups move whole).
__attribute__((target("avx512f"))) void b_tile_avx512(const uint8_t* src, int64_t stride, uint8_t* tile) {
  __m512i r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_si512(src + i * stride);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int h = 0; h < 16; h += 8) {
    for (int i = 0; i < 4; ++i) {
      t[h + i] = _mm512_shuffle_i32x4(r[h + i], r[h + i + 4], 0x88);
      t[h + i + 4] = _mm512_shuffle_i32x4(r[h + i], r[h + i + 4], 0xdd);
    }
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
  }
  for (int i = 0; i < 16; ++i) _mm512_storeu_si512(tile + i * 64, r[i]);
}

}  // namespace

#define BITNET_AMX_B_TILE b_tile_avx512

#include "kernels/amx_rows.inc"

namespace {

constexpr long kArchReqXcompPerm = 0x1023;  // arch_prctl: ask for an XSAVE feature (Linux 5.16)
constexpr long kXfeatureXtiledata = 18;

bool amx_usable() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  if (((d >> 24) & 1) == 0 || ((d >> 25) & 1) == 0) return false;  // AMX-TILE, AMX-INT8
  if (!__get_cpuid(1, &a, &b, &c, &d) || ((c >> 27) & 1) == 0) return false;  // OSXSAVE
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if (((lo >> 17) & 3) != 3) return false;  // the OS saves XTILECFG and XTILEDATA
#if defined(__linux__)
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

}  // namespace

bool cpu_has_amx() {
  static const bool usable = amx_usable();
  return usable;
}

}  // namespace bitnet::kernels::detail

#endif  // BITNET_X86
