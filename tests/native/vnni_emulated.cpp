// Checks the logic of the AVX-512 VNNI kernel (csrc/kernels/vnni_tile.inc) on any CPU: the
// kernel is compiled against plain C++ versions of the intrinsics it uses (written from Intel's
// definitions) and compared with the scalar reference, bit for bit, for every tile size, both
// layouts, odd group counts and extreme values. On a CPU with AVX-512 VNNI the real path is also
// checked by kernel_selftest.cpp and the Python tests.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "kernels/layout.h"
#include "kernels/ternary.h"

namespace emu {

using namespace bitnet::kernels;

struct __m128i { uint8_t b[16]; };
struct __m256i { uint8_t b[32]; };
struct __m512i { uint8_t b[64]; };

template <class V>
int32_t get32(const V& v, int i) {
  int32_t x;
  std::memcpy(&x, v.b + 4 * i, 4);
  return x;
}
template <class V>
void set32(V& v, int i, int32_t x) {
  std::memcpy(v.b + 4 * i, &x, 4);
}

inline __m512i _mm512_set1_epi8(char c) { __m512i r; std::memset(r.b, static_cast<uint8_t>(c), 64); return r; }
inline __m256i _mm256_set1_epi8(char c) { __m256i r; std::memset(r.b, static_cast<uint8_t>(c), 32); return r; }
inline __m512i _mm512_setzero_si512() { return _mm512_set1_epi8(0); }
inline __m256i _mm256_setzero_si256() { return _mm256_set1_epi8(0); }
inline __m512i _mm512_loadu_si512(const void* p) { __m512i r; std::memcpy(r.b, p, 64); return r; }
inline __m256i _mm256_loadu_si256(const __m256i* p) { __m256i r; std::memcpy(r.b, p, 32); return r; }
inline __m512i _mm512_castsi256_si512(__m256i a) { __m512i r{}; std::memcpy(r.b, a.b, 32); return r; }
inline __m512i _mm512_inserti64x4(__m512i a, __m256i b, int imm) { std::memcpy(a.b + 32 * (imm & 1), b.b, 32); return a; }
inline __m256i _mm512_castsi512_si256(__m512i a) { __m256i r; std::memcpy(r.b, a.b, 32); return r; }
inline __m256i _mm512_extracti64x4_epi64(__m512i a, int imm) { __m256i r; std::memcpy(r.b, a.b + 32 * (imm & 1), 32); return r; }
inline __m128i _mm256_castsi256_si128(__m256i a) { __m128i r; std::memcpy(r.b, a.b, 16); return r; }
inline __m128i _mm256_extracti128_si256(__m256i a, int imm) { __m128i r; std::memcpy(r.b, a.b + 16 * (imm & 1), 16); return r; }

template <class V>
V and_(V a, const V& b) {
  for (size_t i = 0; i < sizeof a.b; ++i) a.b[i] &= b.b[i];
  return a;
}
inline __m512i _mm512_and_si512(__m512i a, __m512i b) { return and_(a, b); }
inline __m256i _mm256_and_si256(__m256i a, __m256i b) { return and_(a, b); }

template <class V>
V srli16(V a, int n) {  // logical right shift of each little-endian 16-bit lane
  for (size_t i = 0; i < sizeof a.b; i += 2) {
    const uint16_t lane = static_cast<uint16_t>(a.b[i] | (a.b[i + 1] << 8));
    const uint16_t out = n > 15 ? 0 : static_cast<uint16_t>(lane >> n);
    a.b[i] = static_cast<uint8_t>(out & 0xff);
    a.b[i + 1] = static_cast<uint8_t>(out >> 8);
  }
  return a;
}
inline __m512i _mm512_srli_epi16(__m512i a, int n) { return srli16(a, n); }
inline __m256i _mm256_srli_epi16(__m256i a, int n) { return srli16(a, n); }

template <class V>
V dpbusd(V src, const V& a, const V& b) {  // u8 (a) x s8 (b), groups of 4, added to 32-bit src
  for (size_t i = 0; i < sizeof a.b / 4; ++i) {
    int32_t sum = get32(src, static_cast<int>(i));
    for (int j = 0; j < 4; ++j) sum += static_cast<int32_t>(a.b[4 * i + j]) * static_cast<int8_t>(b.b[4 * i + j]);
    set32(src, static_cast<int>(i), sum);
  }
  return src;
}
inline __m512i _mm512_dpbusd_epi32(__m512i s, __m512i a, __m512i b) { return dpbusd(s, a, b); }
inline __m256i _mm256_dpbusd_epi32(__m256i s, __m256i a, __m256i b) { return dpbusd(s, a, b); }

template <class V>
V add32(V a, const V& b) {
  for (int i = 0; i < static_cast<int>(sizeof a.b / 4); ++i) set32(a, i, get32(a, i) + get32(b, i));
  return a;
}
inline __m256i _mm256_add_epi32(__m256i a, __m256i b) { return add32(a, b); }
inline __m128i _mm_add_epi32(__m128i a, __m128i b) { return add32(a, b); }
inline __m128i _mm_shuffle_epi32(__m128i a, int imm) {
  __m128i r;
  for (int i = 0; i < 4; ++i) set32(r, i, get32(a, (imm >> (2 * i)) & 3));
  return r;
}
inline int32_t _mm_cvtsi128_si32(__m128i a) { return get32(a, 0); }

#define BITNET_VNNI_TARGET
#include "kernels/vnni_tile.inc"

using Kernel = void (*)(const uint8_t*, int64_t, const int8_t*, int64_t, int64_t, int32_t*);
template <Layout L>
Kernel pick(int r, int t) {
  const Kernel table[4][4] = {{vnni<L, 1, 1>, vnni<L, 1, 2>, vnni<L, 1, 3>, vnni<L, 1, 4>},
                              {vnni<L, 2, 1>, vnni<L, 2, 2>, vnni<L, 2, 3>, vnni<L, 2, 4>},
                              {vnni<L, 3, 1>, vnni<L, 3, 2>, vnni<L, 3, 3>, vnni<L, 3, 4>},
                              {vnni<L, 4, 1>, vnni<L, 4, 2>, vnni<L, 4, 3>, vnni<L, 4, 4>}};
  return table[r - 1][t - 1];
}

using Unpacked = void (*)(const uint8_t*, int64_t, const int8_t*, int64_t, int64_t, int32_t*, int64_t);
inline Unpacked pick_unpacked(int r, int t) {
  const Unpacked table[4][4] = {{vnni_unpacked<1, 1>, vnni_unpacked<1, 2>, vnni_unpacked<1, 3>, vnni_unpacked<1, 4>},
                                {vnni_unpacked<2, 1>, vnni_unpacked<2, 2>, vnni_unpacked<2, 3>, vnni_unpacked<2, 4>},
                                {vnni_unpacked<3, 1>, vnni_unpacked<3, 2>, vnni_unpacked<3, 3>, vnni_unpacked<3, 4>},
                                {vnni_unpacked<4, 1>, vnni_unpacked<4, 2>, vnni_unpacked<4, 3>, vnni_unpacked<4, 4>}};
  return table[r - 1][t - 1];
}

}  // namespace emu

int main() {
  using namespace bitnet::kernels;
  uint64_t state = 12345;
  auto next = [&] { state = state * 6364136223846793005ull + 1442695040888963407ull; return static_cast<uint32_t>(state >> 33); };
  int checked = 0, failures = 0;
  for (Layout layout : {Layout::kI2S, Layout::kTQ2}) {
    for (int64_t k : {128, 256, 384, 1280, 2560, 6912}) {
      if (layout == Layout::kTQ2 && k % kTq2Block) continue;
      for (int pattern = 0; pattern < 3; ++pattern) {
        const int64_t rb = row_bytes(layout, k), xs = k + 64;
        std::vector<uint8_t> w(4 * rb);
        for (auto& b : w) b = pattern == 1 ? 0xAA : static_cast<uint8_t>(next());
        std::vector<int8_t> x(4 * xs);
        for (auto& v : x) v = pattern == 2 ? ((next() & 1) ? 127 : -127) : static_cast<int8_t>(static_cast<int>(next() % 255) - 127);
        for (int nr = 1; nr <= 4; ++nr) {
          for (int nt = 1; nt <= 4; ++nt) {
            int32_t want[16], got[16];
            scalar_impl().tile(layout, w.data(), rb, nr, x.data(), xs, nt, k, want);
            const emu::Kernel fn = layout == Layout::kI2S ? emu::pick<Layout::kI2S>(nr, nt) : emu::pick<Layout::kTQ2>(nr, nt);
            fn(w.data(), rb, x.data(), xs, k, got);
            ++checked;
            if (std::memcmp(want, got, sizeof(int32_t) * nr * nt) != 0) {
              ++failures;
              std::printf("MISMATCH layout=%d k=%ld pattern=%d tile=%dx%d: %d vs %d\n", static_cast<int>(layout),
                          static_cast<long>(k), pattern, nr, nt, want[0], got[0]);
            }
          }
        }
      }
    }
  }
  // The unpacked-codes kernel (batches): against the scalar tile over the packed codes.
  for (Layout layout : {Layout::kI2S, Layout::kTQ2}) {
    for (int64_t k : {128, 256, 1280, 2048}) {
      if (layout == Layout::kTQ2 && k % kTq2Block) continue;
      for (int pattern = 0; pattern < 3; ++pattern) {
        const int64_t rb = row_bytes(layout, k), xs = k + 64;
        std::vector<uint8_t> w(4 * rb);
        for (auto& b : w) b = pattern == 1 ? 0xAA : static_cast<uint8_t>(next());
        std::vector<int8_t> x(4 * xs);
        for (auto& v : x) v = pattern == 2 ? ((next() & 1) ? 127 : -128) : static_cast<int8_t>(static_cast<int>(next() % 256) - 128);
        std::vector<uint8_t> codes(4 * k);
        for (int r = 0; r < 4; ++r) unpack_codes(layout, w.data() + r * rb, 0, k / kGroup, codes.data() + r * k);
        for (int nr = 1; nr <= 4; ++nr) {
          for (int nt = 1; nt <= 4; ++nt) {
            int32_t want[16], acc[4 * 5], got[16];
            scalar_impl().tile(layout, w.data(), rb, nr, x.data(), xs, nt, k, want);
            for (int i = 0; i < 4 * 5; ++i) acc[i] = -7;  // the kernel adds to what is there
            emu::pick_unpacked(nr, nt)(codes.data(), k, x.data(), xs, k, acc, 5);  // token-major, stride 5
            for (int r = 0; r < nr; ++r)
              for (int t = 0; t < nt; ++t) got[r * nt + t] = acc[t * 5 + r] + 7;
            ++checked;
            if (std::memcmp(want, got, sizeof(int32_t) * nr * nt) != 0) {
              ++failures;
              std::printf("MISMATCH unpacked layout=%d k=%ld pattern=%d tile=%dx%d: %d vs %d\n",
                          static_cast<int>(layout), static_cast<long>(k), pattern, nr, nt, want[0], got[0]);
            }
          }
        }
      }
    }
  }
  std::printf("vnni (emulated) checked=%d failures=%d\n", checked, failures);
  return failures == 0 ? 0 : 1;
}
