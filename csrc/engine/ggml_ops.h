// The ggml custom ops through which BitNetEngine's graph runs csrc/kernels: activation
// quantization, the ternary matmul and the Q6_K output head. ggml's thread pool runs them.
#pragma once

#include <atomic>
#include <cstdint>

#include "ggml.h"
#include "kernels/attention.h"
#include "kernels/kquant.h"
#include "kernels/ternary.h"

namespace bitnet::engine::ops {

// Bytes after a row's k int8 values in quantize_op's output: the f32 scale and the i32 sum,
// padded so that rows start 64-byte aligned (k is a multiple of 256).
constexpr int64_t kQuantTail = 64;

// Per ternary-matmul node of the current graph: the kernel, the weight and the next row a
// thread takes.
struct TernaryOpState {
  const kernels::Impl* impl = nullptr;
  const kernels::TernaryMatrix* w = nullptr;
  std::atomic<int64_t> next_row{0};
  TernaryOpState() = default;
  TernaryOpState(TernaryOpState&&) noexcept {}  // only ever moved while empty (vector sizing)
};

// The output head on our Q6_K kernel: the dot product and the next row a thread takes.
struct HeadOpState {
  kernels::Q6KDotFn dot = nullptr;
  kernels::Q6KDot2Fn dot2 = nullptr;  // optional: two tokens per pass
  kernels::Q6KDot4Fn dot4 = nullptr;  // optional: four tokens per pass
  const uint8_t* data = nullptr;  // the head's rows (a huge-page copy of the file's)
  std::atomic<int64_t> next_row{0};
};

// The attention of one layer: every token of the batch over its own sequence's cells. Per token
// t: its sequence's first cell and how many cells it sees (its position + 1).
struct AttentionOpState {
  kernels::AttentionShape shape;
  const uint16_t* k_cache = nullptr;  // this layer's cells (f16, shape.cell_stride values each)
  const uint16_t* v_cache = nullptr;
  const int64_t* first_cell = nullptr;
  const int32_t* n_kv = nullptr;
};

// ggml_custom_4d callbacks. quantize_op (userdata: the kernels' Impl): src[0] float activations
// -> I8 rows [k int8 | f32 scale | i32 sum], the int8 in tile order when the Impl runs the batch
// on Impl::rows. ternary_op (userdata: TernaryOpState): src[1] those rows ->
// f32 outputs. head_op (userdata: HeadOpState): src[1] float activations -> logits.
void quantize_op(ggml_tensor* dst, int ith, int nth, void* userdata);
void ternary_op(ggml_tensor* dst, int ith, int nth, void* userdata);
void head_op(ggml_tensor* dst, int ith, int nth, void* userdata);
// attention_op (userdata: AttentionOpState): src[0] roped queries [head_dim, n_head, n_tokens]
// -> [n_head * head_dim, n_tokens]; src[1] and src[2] are the cache writes it must follow.
void attention_op(ggml_tensor* dst, int ith, int nth, void* userdata);

}  // namespace bitnet::engine::ops
