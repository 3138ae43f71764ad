// The scalar reference kernels: every SIMD implementation is tested against these.
#include "kernels/isa.h"

namespace bitnet::kernels::detail {

namespace {


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

}  // namespace

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

namespace {

template <Layout L>
void unpack_rows_scalar(const uint8_t* row, int64_t g0, int64_t g1, uint8_t* dst) {
  for (int64_t g = g0; g < g1; ++g) {
    const uint8_t* codes = group_ptr<L>(row, g);
    uint8_t* d = dst + (g - g0) * kGroup;
    for (int p = 0; p < 4; ++p) {
      for (int j = 0; j < 32; ++j) d[32 * p + j] = (codes[j] >> plane_shift<L>(p)) & 3;
    }
  }
}

}  // namespace

void unpack_scalar(Layout layout, const uint8_t* row, int64_t g0, int64_t g1, uint8_t* dst) {
  return layout == Layout::kI2S ? unpack_rows_scalar<Layout::kI2S>(row, g0, g1, dst)
                                : unpack_rows_scalar<Layout::kTQ2>(row, g0, g1, dst);
}

}  // namespace bitnet::kernels::detail
