// The registry of kernel implementations: what each is, which one this CPU runs; and the
// activation quantization that every implementation shares.
#include "kernels/ternary.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "kernels/isa.h"

#if BITNET_NEON && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)  // the Linux AArch64 hwcap bit of the dot-product extension
#endif
#endif

namespace bitnet::kernels {

using namespace detail;

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
  // Up to 8 tokens: decode steps of the 2B-4T shapes, 2 threads, ms per step at 4 / 8 / 16
  // sequences with the multi-token kernel up to 1 token: 92 / 144 / 245, up to 8: 78 / 140 / 245,
  // up to 16: 77 / 139 / 266.
  static const Impl impl{"avx2", &avx2_tile, &unpacked_avx2_tile, &avx2_gemv_dispatch, &avx2_multi_gemv_dispatch, 8, 2};
  return cpu_has_avx2() ? &impl : nullptr;
}

const Impl* avx512vnni_impl() {
  // Every AVX-512 VNNI CPU has AVX2, whose one-token GEMV (a prefetched row stream) is faster
  // there than VNNI's tiles (Xeon, 2 threads, 2B-4T decode step: 55 -> 41 ms). For 2-16 tokens,
  // 1 x 8 VNNI tiles over prefetched rows (2B-4T decode steps at 4 / 8 / 16 sequences: VNNI's
  // unpacked tiles 87 / 128 / 214 ms, AVX2's pairs 72 / 125 / 209, VNNI 1 x 2 71 / 121 / 203,
  // 1 x 4 58 / 95 / 163, 1 x 8 57 / 91 / 155). Prompts stay on the unpacked tiles (pp128 130
  // vs 126 tokens/s over 1 x 8; pp32 equal).
  static const Impl impl{"avx512vnni", &vnni_tile, &vnni_unpacked_tile, &avx2_gemv_dispatch,
                         &vnni_multi_gemv_dispatch, 16, 8};
  return cpu_has_avx512vnni() ? &impl : nullptr;
}

const Impl* amx_impl() {
  // Batches past the multi-token kernels' range run on the tile unit (amx_rows.inc); fewer
  // tokens, one token and the head stay on the VNNI/AVX2 kernels above.
  static const Impl impl{"amx", &vnni_tile, &vnni_unpacked_tile, &avx2_gemv_dispatch, &vnni_multi_gemv_dispatch,
                         16, 8, &amx_rows, 17};
  return cpu_has_avx512vnni() && cpu_has_amx() ? &impl : nullptr;
}
#else
bool cpu_has_avx2() { return false; }
const Impl* avx2_impl() { return nullptr; }
const Impl* avx512vnni_impl() { return nullptr; }
const Impl* amx_impl() { return nullptr; }
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
  // BITNET_MAX_ISA=avx512vnni, avx2 (or scalar) caps what "auto" picks, as oneDNN's ONEDNN_MAX_CPU_ISA does:
  // to measure the AVX2 path on a CPU that also has AVX-512, or to rule a kernel out. A value
  // that names nothing runnable is ignored (the fastest kernel runs).
  static const Impl& chosen = [] () -> const Impl& {
    const char* cap = std::getenv("BITNET_MAX_ISA");
    const std::string c = cap != nullptr ? cap : "";
    if (c == "scalar") return scalar_impl();
    if (c != "avx512vnni" && c != "avx2" && c != "neon") {
      if (const Impl* impl = amx_impl()) return *impl;
    }
    if (c != "avx2" && c != "neon") {
      if (const Impl* impl = avx512vnni_impl()) return *impl;
    }
    if (c != "neon") {
      if (const Impl* impl = avx2_impl()) return *impl;
    }
    if (const Impl* impl = neon_impl()) return *impl;
    return scalar_impl();
  }();
  return chosen;
}

const Impl* impl_by_name(const char* name) {
  const std::string n(name);
  if (n == "auto") return &best_impl();
  if (n == "scalar") return &scalar_impl();
  if (n == "avx2") return avx2_impl();
  if (n == "avx512vnni") return avx512vnni_impl();
  if (n == "amx") return amx_impl();
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

float quantize_row(const float* x, int64_t k, int8_t* q, int32_t* sum) {
#if BITNET_X86
  static const bool avx2 = cpu_has_avx2();
  if (avx2) return quantize_row_avx2(x, k, q, sum);
#endif
  return quantize_row_scalar(x, k, q, sum);
}

}  // namespace bitnet::kernels
