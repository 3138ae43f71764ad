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

// The shuffle controls of b_tile_vbmi. gather[p]: for tile rows kk = 4p..4p+3, byte
// 8m + 2(kk % 4) + b of the result is packed byte kk of row n = 2m + b, picked (vpermt2b) from two
// registers of four rows' 16 bytes each. extract[layout][kk % 4]: byte 4b + i of each qword is the
// 8-bit field of that qword (vpmultishiftqb) whose low two bits are plane i of row 2m + b.
struct BTileControls {
  alignas(64) uint8_t gather[4][64];
  alignas(64) uint8_t extract[2][4][64];
  BTileControls() {
    for (int p = 0; p < 4; ++p) {
      for (int pos = 0; pos < 64; ++pos) {
        const int m = pos / 8, kl = (pos % 8) / 2, b = pos % 2, nl = (2 * m + b) % 8;
        gather[p][pos] = static_cast<uint8_t>((nl / 4) * 64 + (nl % 4) * 16 + 4 * p + kl);
      }
    }
    for (int l = 0; l < 2; ++l) {
      for (int kl = 0; kl < 4; ++kl) {
        for (int pos = 0; pos < 64; ++pos) {
          const int b = (pos % 8) / 4, i = pos % 4;
          const int shift = l == 0 ? plane_shift<Layout::kI2S>(i) : plane_shift<Layout::kTQ2>(i);
          extract[l][kl][pos] = static_cast<uint8_t>(8 * (2 * kl + b) + shift);
        }
      }
    }
  }
};

// b_tile_reference with AVX-512 VBMI: the 16 rows' 16 bytes in four registers; per four tile
// rows, two two-table byte shuffles put each qword's row pair side by side, then per tile row one
// multishift pulls the four planes of both bytes into place (and a mask keeps their two bits).
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) void b_tile_vbmi(Layout layout, const uint8_t* const* rows,
                                                                        int64_t offset, uint8_t* tile) {
  static const BTileControls controls;
  __m512i z[4];
  for (int j = 0; j < 4; ++j) {
    __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[4 * j] + offset)));
    v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[4 * j + 1] + offset)), 1);
    v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[4 * j + 2] + offset)), 2);
    z[j] = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[4 * j + 3] + offset)), 3);
  }
  const __m512i mask = _mm512_set1_epi8(3);
  const int l = layout == Layout::kI2S ? 0 : 1;
  for (int p = 0; p < 4; ++p) {
    const __m512i idx = _mm512_load_si512(controls.gather[p]);
    const __m512i lo = _mm512_permutex2var_epi8(z[0], idx, z[1]);
    const __m512i hi = _mm512_permutex2var_epi8(z[2], idx, z[3]);
    const __m512i pairs = _mm512_mask_blend_epi64(0xF0, lo, hi);
    for (int kl = 0; kl < 4; ++kl) {
      const __m512i ctrl = _mm512_load_si512(controls.extract[l][kl]);
      const __m512i codes = _mm512_and_si512(_mm512_multishift_epi64_epi8(ctrl, pairs), mask);
      _mm512_storeu_si512(tile + (4 * p + kl) * 64, codes);
    }
  }
}

}  // namespace

#define BITNET_AMX_B_TILE b_tile_vbmi

#include "kernels/amx_rows.inc"

namespace {

constexpr long kArchReqXcompPerm = 0x1023;  // arch_prctl: ask for an XSAVE feature (Linux 5.16)
constexpr long kXfeatureXtiledata = 18;

bool amx_usable() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  if (((d >> 24) & 1) == 0 || ((d >> 25) & 1) == 0) return false;  // AMX-TILE, AMX-INT8
  if (((c >> 1) & 1) == 0) return false;  // AVX512_VBMI (every AMX CPU so far has it): the B tiles
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
