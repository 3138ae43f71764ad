#include "engine/ggml_ops.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace bitnet::engine::ops {

// Activations are quantized by one op into an I8 tensor of rows [k int8 | f32 scale | i32 sum]
// read by every ternary matmul of the same input; both ops split their work over ggml's threads.

// kQuantTail pads the rows to 64-byte alignment: misaligned activation rows made the GEMM ~25%
// slower.

void quantize_op(ggml_tensor* dst, int ith, int nth, void* userdata) {
  const ggml_tensor* src = dst->src[0];
  const int64_t k = src->ne[0];
  const auto* impl = static_cast<const kernels::Impl*>(userdata);
  // Batches the tile unit runs are written in its order once here, not reordered per matmul.
  const bool tile_order = impl != nullptr && kernels::takes_rows_path(*impl, src->ne[1]);
  static thread_local std::vector<int8_t> natural;
  if (tile_order) natural.resize(static_cast<size_t>(k));
  for (int64_t t = ith; t < src->ne[1]; t += nth) {
    const float* x = reinterpret_cast<const float*>(static_cast<const char*>(src->data) + t * src->nb[1]);
    int8_t* q = static_cast<int8_t*>(dst->data) + t * dst->nb[1];
    int32_t sum = 0;
    const float scale = kernels::quantize_row(x, k, tile_order ? natural.data() : q, &sum);
    if (tile_order) kernels::to_tile_order(natural.data(), k, q);
    std::memcpy(q + k, &scale, sizeof scale);
    std::memcpy(q + k + 4, &sum, sizeof sum);
  }
}

void ternary_op(ggml_tensor* dst, int ith, int nth, void* userdata) {
  auto* op = static_cast<TernaryOpState*>(userdata);
  const kernels::TernaryMatrix& m = *op->w;
  const ggml_tensor* xq = dst->src[1];
  const int64_t k = m.k, rows = m.rows, n = xq->ne[1];
  std::vector<float> scale(static_cast<size_t>(n));
  std::vector<int32_t> sum(static_cast<size_t>(n));
  const auto* q = static_cast<const int8_t*>(xq->data);
  for (int64_t t = 0; t < n; ++t) {
    std::memcpy(&scale[t], q + t * xq->nb[1] + k, sizeof(float));
    std::memcpy(&sum[t], q + t * xq->nb[1] + k + 4, sizeof(int32_t));
  }
  const kernels::QuantizedActivations x{q, static_cast<int64_t>(xq->nb[1]), scale.data(), sum.data(), n,
                                        kernels::takes_rows_path(*op->impl, n)};  // as quantize_op wrote them
  auto* y = static_cast<float*>(dst->data);
  const int64_t y_stride = static_cast<int64_t>(dst->nb[1] / sizeof(float));
  // Chunks of rows (multiples of 4) taken from a shared counter: a thread that runs ahead takes
  // more, instead of waiting at the node's barrier for a static half.
  int64_t chunk = std::max<int64_t>(16, (rows / (8 * std::max(1, nth)) + 3) / 4 * 4);
  // The tile unit's kernel computes whole blocks of 32 rows: chunks of whole blocks.
  if (op->impl->rows != nullptr && n >= op->impl->rows_min_tokens) chunk = (chunk + 31) / 32 * 32;
  (void)ith;
  for (;;) {
    const int64_t r0 = op->next_row.fetch_add(chunk, std::memory_order_relaxed);
    if (r0 >= rows) break;
    kernels::gemm_rows(*op->impl, m, r0, std::min(rows, r0 + chunk), x, y, y_stride);
  }
}

// The Q6_K head: each thread quantizes the tokens' activations per 256 values itself (a few
// microseconds; no node and barrier of its own), then takes chunks of rows from a shared counter
// and runs every token against a chunk while it is in cache.
void head_op(ggml_tensor* dst, int ith, int nth, void* userdata) {
  auto* op = static_cast<HeadOpState*>(userdata);
  const ggml_tensor* w = dst->src[0];
  const ggml_tensor* x = dst->src[1];
  const int64_t k = w->ne[0], rows = w->ne[1], n = x->ne[1], blocks = k / kernels::kQ6KBlock;
  static thread_local std::vector<kernels::Q8Block> xq_storage;
  std::vector<kernels::Q8Block>& xq = xq_storage;
  xq.resize(static_cast<size_t>(n * blocks));
  for (int64_t t = 0; t < n; ++t) {
    kernels::quantize_row_q8(reinterpret_cast<const float*>(static_cast<const char*>(x->data) + t * x->nb[1]), k,
                             xq.data() + t * blocks);
  }
  auto* y = static_cast<float*>(dst->data);
  const int64_t y_stride = static_cast<int64_t>(dst->nb[1] / sizeof(float));
  constexpr int64_t kChunk = 64;  // rows: 134 KiB of the 2B-4T head, in L2 while the tokens pass
  (void)ith;
  (void)nth;
  for (;;) {
    const int64_t r0 = op->next_row.fetch_add(kChunk, std::memory_order_relaxed);
    if (r0 >= rows) break;
    const int64_t nr = std::min(kChunk, rows - r0);
    const uint8_t* rows = op->data + r0 * w->nb[1];
    const auto stride = static_cast<int64_t>(w->nb[1]);
    int64_t t = 0;
    if (op->dot4 != nullptr) {
      for (; t + 4 <= n; t += 4) {
        const kernels::Q8Block* xs[4];
        float* ys[4];
        for (int j = 0; j < 4; ++j) {
          xs[j] = xq.data() + (t + j) * blocks;
          ys[j] = y + (t + j) * y_stride + r0;
        }
        op->dot4(rows, stride, nr, xs, blocks, ys);
      }
    }
    if (op->dot2 != nullptr) {
      for (; t + 2 <= n; t += 2) {
        op->dot2(rows, stride, nr, xq.data() + t * blocks, xq.data() + (t + 1) * blocks, blocks, y + t * y_stride + r0,
                 y + (t + 1) * y_stride + r0);
      }
    }
    for (; t < n; ++t) op->dot(rows, stride, nr, xq.data() + t * blocks, blocks, y + t * y_stride + r0);
  }
}

// Work items are (token, kv head) pairs dealt round-robin: each is computed by one thread from
// start to end, so results do not depend on the thread count or on the batch.
void attention_op(ggml_tensor* dst, int ith, int nth, void* userdata) {
  const auto* op = static_cast<const AttentionOpState*>(userdata);
  const ggml_tensor* q = dst->src[0];
  const kernels::AttentionShape& shape = op->shape;
  const int g = shape.n_head / shape.n_head_kv;
  const int64_t n_tokens = q->ne[2];
  static thread_local std::vector<float> scratch_storage;
  std::vector<float>& scratch = scratch_storage;
  for (int64_t item = ith; item < n_tokens * shape.n_head_kv; item += nth) {
    const int64_t t = item / shape.n_head_kv;
    const int h = static_cast<int>(item % shape.n_head_kv);
    const int64_t n_kv = op->n_kv[t];
    if (scratch.size() < static_cast<size_t>(n_kv * g)) scratch.resize(static_cast<size_t>(n_kv * g));
    const size_t cell0 = static_cast<size_t>(op->first_cell[t] * shape.cell_stride);
    const auto* qt = reinterpret_cast<const float*>(static_cast<const char*>(q->data) + t * q->nb[2] +
                                                    static_cast<int64_t>(h) * g * q->nb[1]);
    auto* out = reinterpret_cast<float*>(static_cast<char*>(dst->data) + t * dst->nb[1]) +
                static_cast<int64_t>(h) * g * shape.head_dim;
    kernels::attend(shape, qt, op->k_cache + cell0, op->v_cache + cell0, n_kv, h, out, scratch.data());
  }
}

}  // namespace bitnet::engine::ops
