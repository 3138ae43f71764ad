// Attention of one token over its own sequence's cached keys and values (csrc/kernels).
//
// BitNetEngine's KV cache holds several sequences side by side; each token of a batch attends
// only to the cells of its own sequence, up to its own position. Every (token, kv head) is
// computed on its own, in one fixed order over the cells, so a token's result is the same
// whatever else shares its batch, and however its prompt was cut into chunks.
#pragma once

#include <cstdint>

namespace bitnet::kernels {

struct AttentionShape {
  int n_head = 0;     // query heads
  int n_head_kv = 0;  // key/value heads; query head h reads kv head h / (n_head / n_head_kv)
  int head_dim = 0;
  int64_t cell_stride = 0;  // f16 values between consecutive cells (n_head_kv * head_dim)
  float scale = 1.0f;       // applied to q . k before the softmax
};

// For the query heads of kv head `kv_head` (n_head / n_head_kv of them, head_dim floats each,
// consecutive at q): out_h = sum_c softmax_c(scale * q_h . k_c) v_c over the cells c < n_kv of
// k and v (IEEE half, one cell every cell_stride values, this kv head's head_dim values at
// kv_head * head_dim). out has the same layout as q. scratch holds n_kv * (n_head / n_head_kv)
// floats.
void attend(const AttentionShape& shape, const float* q, const uint16_t* k, const uint16_t* v, int64_t n_kv,
            int kv_head, float* out, float* scratch);

// The portable version (the reference the SIMD ones are tested against, tests/native/
// kernel_selftest.cpp), and the name of the one attend() runs for head_dim a multiple of 16:
// "avx512" (where the ternary kernels are AVX-512 VNNI or AMX ones), "avx2" (AVX2 + FMA + F16C)
// or "scalar".
void attend_scalar(const AttentionShape& shape, const float* q, const uint16_t* k, const uint16_t* v, int64_t n_kv,
                   int kv_head, float* out, float* scratch);
const char* attention_impl();

}  // namespace bitnet::kernels
