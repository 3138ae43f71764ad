// BitNetEngine: our own ggml graph for the BitNet b1.58 family.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/engine.h"
#include "engine/ggml_ops.h"
#include "engine/packed_weights.h"
#include "ggml-cpp.h"
#include "gguf_file.h"
#include "kernels/kquant.h"
#include "kernels/ternary.h"

namespace bitnet::engine {

// Activation of the gated FFN: relu(gate)^2 * up (BitNet b1.58 2B-4T) or silu(gate) * up.
enum class FfnActivation { kReluSquared, kSilu };

struct BitNetHParams {
  std::string arch;
  int n_vocab = 0;
  int n_embd = 0;
  int n_layer = 0;
  int n_head = 0;
  int n_head_kv = 0;
  int n_ff = 0;
  int n_ctx_train = 0;
  int n_rot = 0;
  float rope_freq_base = 10000.0f;
  float rms_eps = 1e-5f;
  FfnActivation activation = FfnActivation::kSilu;

  int head_dim() const { return n_embd / n_head; }
  int n_embd_kv() const { return head_dim() * n_head_kv; }
};

// The architectures BitNetEngine runs (bitnet.formats.gguf.BITNET_ARCHITECTURES reads this list).
inline constexpr std::array<const char*, 3> kBitnetArchitectures = {"bitnet", "bitnet-b1.58", "bitnet-25"};
bool is_bitnet_arch(const std::string& arch);

class BitNetEngine final : public Engine {
 public:
  // `gguf` and `tensors` are the file's open_gguf() tables (passed in so the file is parsed once).
  BitNetEngine(const std::string& path, gguf_context_ptr gguf, ggml_context_ptr tensors, const EngineConfig& config);

  const char* name() const override { return "bitnet"; }
  int n_vocab() const override { return hp_.n_vocab; }
  int n_ctx() const override { return config_.n_ctx; }
  int n_batch() const override { return config_.n_batch; }
  int n_threads() const override { return config_.n_threads; }
  void set_threads(int n_threads, int n_threads_batch) override;
  std::string kernels() const override;
  // The file's GGUF metadata, parsed once at load.
  const gguf_context* metadata() const { return gguf_.get(); }

  const BitNetHParams& hparams() const { return hp_; }

 private:
  struct Layer {
    ggml_tensor* attn_norm = nullptr;
    ggml_tensor* wq = nullptr;
    ggml_tensor* wk = nullptr;
    ggml_tensor* wv = nullptr;
    ggml_tensor* wo = nullptr;
    ggml_tensor* attn_sub_norm = nullptr;  // absent in llama-style ternary models
    ggml_tensor* ffn_norm = nullptr;
    ggml_tensor* ffn_gate = nullptr;
    ggml_tensor* ffn_up = nullptr;
    ggml_tensor* ffn_down = nullptr;
    ggml_tensor* ffn_sub_norm = nullptr;
    // f16 cells of n_embd_kv values, sequence s at cells [s * n_ctx, (s + 1) * n_ctx).
    ggml_tensor* k_cache = nullptr;
    ggml_tensor* v_cache = nullptr;
  };
  struct GraphInputs {
    ggml_tensor* tokens = nullptr;
    ggml_tensor* positions = nullptr;
    ggml_tensor* cells = nullptr;    // I64: the cache cell each token's key and value go to
    ggml_tensor* out_ids = nullptr;  // I32: the tokens whose logits are wanted (null: all)
    ggml_tensor* logits = nullptr;
  };

 protected:
  bool run_batch(const BatchToken* batch, int n_tokens, float* logits) override;
  void drop_positions(int seq, int n_keep) override;
  void copy_positions(int src, int dst, int n) override;

  void load_hparams(const std::string& path);
  void bind_weights(const std::string& path);
  void allocate_cache();
  void choose_kernels();
  // w x for a ternary weight: our kernels on activations quantized once (`xq`, built on first
  // use and shared by the matmuls that read the same x), or ggml_mul_mat.
  ggml_tensor* matmul(ggml_context* ctx, ggml_tensor* w, ggml_tensor* x, ggml_tensor** xq);
  // The logits: output_ x, on our Q6_K kernel when choose_kernels() took the head, else ggml.
  ggml_tensor* head(ggml_context* ctx, ggml_tensor* x);
  // The graph of a batch of n_tokens whose first n_out outputs (out_ids) are wanted; without
  // head_needed it stops before the output head.
  ggml_cgraph* build_graph(ggml_context* ctx, int n_tokens, int n_out, bool head_needed, GraphInputs* in);

  EngineConfig config_;
  std::string path_;
  BitNetHParams hp_;
  // Declared in dependency order: members are destroyed bottom-up, the buffer before the
  // tensor descriptions that point into it, both before the file mapping.
  std::unique_ptr<MappedFile> file_;
  gguf_context_ptr gguf_;
  ggml_context_ptr weights_ctx_;  // tensor descriptions pointing into file_
  ggml_backend_buffer_ptr weights_buf_;
  ggml_context_ptr cache_ctx_;
  ggml_backend_buffer_ptr cache_buf_;
  ggml_backend_ptr backend_;
  ggml_gallocr_ptr galloc_;
  size_t graph_nodes_ = 0;  // sized for the model's depth
  std::vector<uint8_t> graph_arena_;
  ggml_tensor* tok_embd_ = nullptr;
  ggml_tensor* output_norm_ = nullptr;
  ggml_tensor* output_ = nullptr;  // tok_embd_ when the head is tied
  std::vector<Layer> layers_;
  // Per token of the running batch, read by the attention ops.
  std::vector<int64_t> first_cell_;
  std::vector<int32_t> n_kv_;
  std::vector<ops::AttentionOpState> attention_;  // one per layer
  const kernels::Impl* kernel_impl_ = nullptr;       // null: ggml runs every matmul
  // Weights our kernels take, in packed_ (shared with the other engines of this process on the
  // same file).
  std::shared_ptr<const PackedWeights> packed_;
  std::unordered_map<const ggml_tensor*, const kernels::TernaryMatrix*> own_kernel_;
  int n_ternary_ = 0;                                  // ternary weights in the model
  ops::HeadOpState head_;                                   // head_.dot null: ggml runs the head
  std::vector<ops::TernaryOpState> op_states_;              // reset by each build_graph
  size_t n_op_states_ = 0;
};

}  // namespace bitnet::engine
