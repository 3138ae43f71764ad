#include "engine/bitnet_engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "engine/ggml_ops.h"
#include "engine/packed_weights.h"
#include "errors.h"
#include "ggml-cpu.h"
#include "kernels/thread_pool.h"

namespace bitnet::engine {

namespace {

// Graph nodes (and tensors) per layer are ~40; the head and inputs need a few more.
constexpr int kGraphNodesPerLayer = 64;
constexpr int kMinGraphNodes = 8192;

std::string key(const std::string& arch, const char* suffix) { return arch + "." + suffix; }

// The weight types ggml's CPU backend both multiplies (mul_mat) and reads rows of (get_rows).
bool is_supported_weight_type(ggml_type type) {
  switch (type) {
    case GGML_TYPE_F32:
    case GGML_TYPE_F16:
    case GGML_TYPE_BF16:
    case GGML_TYPE_Q4_0:
    case GGML_TYPE_Q4_1:
    case GGML_TYPE_Q5_0:
    case GGML_TYPE_Q5_1:
    case GGML_TYPE_Q8_0:
    case GGML_TYPE_Q2_K:
    case GGML_TYPE_Q3_K:
    case GGML_TYPE_Q4_K:
    case GGML_TYPE_Q5_K:
    case GGML_TYPE_Q6_K:
    case GGML_TYPE_TQ1_0:
    case GGML_TYPE_TQ2_0:
      return true;
    default:
      return false;
  }
}

}  // namespace

bool is_bitnet_arch(const std::string& arch) {
  return std::find(kBitnetArchitectures.begin(), kBitnetArchitectures.end(), arch) != kBitnetArchitectures.end();
}

BitNetEngine::BitNetEngine(const std::string& path, gguf_context_ptr gguf, ggml_context_ptr tensors,
                           const EngineConfig& config)
    : config_(config), path_(path), gguf_(std::move(gguf)), weights_ctx_(std::move(tensors)) {
  load_hparams(path);
  if (config_.n_ctx < 1) throw InvalidArgument("n_ctx must be >= 1");
  if (config_.n_batch < 1) throw InvalidArgument("n_batch must be >= 1");
  file_ = std::make_unique<MappedFile>(path, config_.use_mmap);
  bind_weights(path);
  backend_.reset(ggml_backend_cpu_init());
  if (!backend_) throw EngineError("cannot initialise ggml's CPU backend");
  ggml_backend_cpu_set_abort_callback(backend_.get(), &Engine::abort_callback, this);
  allocate_cache();
  choose_kernels();
  galloc_.reset(ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend_.get())));
  graph_nodes_ = std::max(kMinGraphNodes, kGraphNodesPerLayer * hp_.n_layer + 256);
  graph_arena_.resize(ggml_tensor_overhead() * graph_nodes_ + ggml_graph_overhead_custom(graph_nodes_, false));
}

void BitNetEngine::load_hparams(const std::string& path) {
  const gguf_context* g = gguf_.get();
  hp_.arch = gguf_string(g, "general.architecture", "");
  if (!is_bitnet_arch(hp_.arch)) {
    std::string known;
    for (const char* arch : kBitnetArchitectures) known += (known.empty() ? "" : ", ") + std::string(arch);
    throw ModelLoadError("'" + path + "' has architecture '" + hp_.arch + "', which BitNetEngine does not run (it runs " +
                         known + "); use engine='llama' or engine='auto'");
  }
  // Every value from the file is range-checked here: what reaches ggml unchecked ends in a
  // GGML_ASSERT (an abort of the whole process) or in sizes that overflow.
  auto integer = [&](const char* suffix, int64_t fallback, int64_t max) {
    const std::string k = key(hp_.arch, suffix);
    const int64_t v = gguf_int(g, k, fallback);
    if (v <= 0 || v > max) {
      throw ModelLoadError("'" + path + "' lacks a valid metadata key '" + k + "'" +
                           (v == -1 && fallback == -1 ? std::string() : " (value " + std::to_string(v) + ")"));
    }
    return static_cast<int>(v);
  };
  auto positive_float = [&](const char* suffix, double fallback) {
    const std::string k = key(hp_.arch, suffix);
    const double v = gguf_float(g, k, fallback);
    if (!std::isfinite(v) || v <= 0.0 || v > 1e30) {
      throw ModelLoadError("'" + path + "' has an invalid '" + k + "' (" + std::to_string(v) +
                           "; it must be a finite number > 0)");
    }
    return static_cast<float>(v);
  };
  constexpr int64_t kMaxDim = int64_t{1} << 20;  // far beyond any model's width, and no overflow
  hp_.n_embd = integer("embedding_length", -1, kMaxDim);
  hp_.n_layer = integer("block_count", -1, 4096);
  hp_.n_head = integer("attention.head_count", -1, kMaxDim);
  hp_.n_ff = integer("feed_forward_length", -1, kMaxDim);
  hp_.n_ctx_train = integer("context_length", -1, INT32_MAX);
  hp_.n_head_kv = integer("attention.head_count_kv", hp_.n_head, hp_.n_head);
  hp_.rope_freq_base = positive_float("rope.freq_base", 10000.0);
  hp_.rms_eps = positive_float("attention.layer_norm_rms_epsilon", 1e-5);
  if (hp_.n_embd % hp_.n_head != 0 || hp_.n_head % hp_.n_head_kv != 0) {
    throw ModelLoadError("'" + path + "' has inconsistent attention shapes: embedding " +
                         std::to_string(hp_.n_embd) + ", heads " + std::to_string(hp_.n_head) +
                         ", kv heads " + std::to_string(hp_.n_head_kv));
  }
  hp_.n_rot = integer("rope.dimension_count", hp_.head_dim(), hp_.head_dim());
  if (hp_.n_rot % 2 != 0) {
    throw ModelLoadError("'" + path + "' has an odd rope.dimension_count (" + std::to_string(hp_.n_rot) +
                         "); rotary embeddings rotate pairs of dimensions");
  }

  // Microsoft's architectures are relu^2; our own `bitnet` files say it in a key, and a
  // missing key means SiLU, as in the 1bitLLM conversions.
  const std::string default_act = hp_.arch == "bitnet" ? "silu" : "relu2";
  const std::string act = gguf_string(g, key(hp_.arch, "hidden_activation"), default_act);
  if (act == "relu2" || act == "relu_squared" || act == "relu^2") {
    hp_.activation = FfnActivation::kReluSquared;
  } else if (act == "silu" || act == "swish") {
    hp_.activation = FfnActivation::kSilu;
  } else {
    throw ModelLoadError("'" + path + "' asks for FFN activation '" + act +
                         "'; BitNetEngine supports 'relu2' and 'silu'");
  }
}

void BitNetEngine::bind_weights(const std::string& path) {
  const gguf_context* g = gguf_.get();
  const size_t data_offset = gguf_get_data_offset(g);
  const int64_t n_tensors = gguf_get_n_tensors(g);
  for (int64_t i = 0; i < n_tensors; ++i) {
    ggml_tensor* t = ggml_get_tensor(weights_ctx_.get(), gguf_get_tensor_name(g, i));
    const size_t end = data_offset + gguf_get_tensor_offset(g, i) + ggml_nbytes(t);
    if (end > file_->size()) {
      throw ModelLoadError("'" + path + "' is truncated: tensor '" + ggml_get_name(t) + "' ends at byte " +
                           std::to_string(end) + " but the file has " + std::to_string(file_->size()) +
                           " bytes (re-download or re-generate the file)");
    }
  }
  weights_buf_.reset(ggml_backend_cpu_buffer_from_ptr(file_->mutable_data(), file_->size()));
  for (int64_t i = 0; i < n_tensors; ++i) {
    ggml_tensor* t = ggml_get_tensor(weights_ctx_.get(), gguf_get_tensor_name(g, i));
    ggml_backend_tensor_alloc(weights_buf_.get(), t, file_->mutable_data() + data_offset + gguf_get_tensor_offset(g, i));
  }

  // Norm weights are multiplied element-wise (ggml takes f32 there); matrices and the
  // embedding must be of a type ggml's CPU backend multiplies and reads rows of.
  enum class Role { kNorm, kMatrix };
  auto find = [&](const std::string& name, int64_t ne0, int64_t ne1, bool required, Role role) -> ggml_tensor* {
    ggml_tensor* t = ggml_get_tensor(weights_ctx_.get(), name.c_str());
    if (t == nullptr) {
      if (required) throw ModelLoadError("'" + path + "' lacks tensor '" + name + "'");
      return nullptr;
    }
    const bool type_ok = role == Role::kNorm ? t->type == GGML_TYPE_F32 : is_supported_weight_type(t->type);
    if (!type_ok) {
      const char* type_name = ggml_type_name(t->type);
      throw ModelLoadError("'" + path + "': tensor '" + name + "' has type " +
                           (type_name != nullptr ? type_name : std::to_string(t->type)) + ", which BitNetEngine " +
                           (role == Role::kNorm ? "needs as f32" : "cannot multiply") + " (re-convert the model)");
    }
    const int64_t want1 = ne1 > 0 ? ne1 : 1;
    if (t->ne[0] != ne0 || t->ne[1] != want1 || t->ne[2] != 1 || t->ne[3] != 1) {
      throw ModelLoadError("'" + path + "': tensor '" + name + "' has shape [" + std::to_string(t->ne[0]) + ", " +
                           std::to_string(t->ne[1]) + "], expected [" + std::to_string(ne0) + ", " +
                           std::to_string(want1) + "] from the file's metadata");
    }
    return t;
  };

  ggml_tensor* embd = ggml_get_tensor(weights_ctx_.get(), "token_embd.weight");
  if (embd == nullptr) throw ModelLoadError("'" + path + "' lacks tensor 'token_embd.weight'");
  if (embd->ne[1] < 1 || embd->ne[1] > INT32_MAX) {
    throw ModelLoadError("'" + path + "': tensor 'token_embd.weight' has " + std::to_string(embd->ne[1]) +
                         " rows, not a vocabulary size");
  }
  hp_.n_vocab = static_cast<int>(embd->ne[1]);
  tok_embd_ = find("token_embd.weight", hp_.n_embd, hp_.n_vocab, true, Role::kMatrix);
  output_norm_ = find("output_norm.weight", hp_.n_embd, 0, true, Role::kNorm);
  output_ = find("output.weight", hp_.n_embd, hp_.n_vocab, false, Role::kMatrix);
  if (output_ == nullptr) output_ = tok_embd_;

  // Each layer has at least 9 tensors: a block_count beyond what the file holds is damage (and
  // must not size anything before the missing tensors are found).
  if (static_cast<int64_t>(hp_.n_layer) * 9 > n_tensors) {
    throw ModelLoadError("'" + path + "' says it has " + std::to_string(hp_.n_layer) + " layers (block_count) but holds only " +
                         std::to_string(n_tensors) + " tensors");
  }
  const int n_embd_kv = hp_.n_embd_kv();
  layers_.resize(hp_.n_layer);
  for (int il = 0; il < hp_.n_layer; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    Layer& l = layers_[il];
    l.attn_norm = find(p + "attn_norm.weight", hp_.n_embd, 0, true, Role::kNorm);
    l.wq = find(p + "attn_q.weight", hp_.n_embd, hp_.n_embd, true, Role::kMatrix);
    l.wk = find(p + "attn_k.weight", hp_.n_embd, n_embd_kv, true, Role::kMatrix);
    l.wv = find(p + "attn_v.weight", hp_.n_embd, n_embd_kv, true, Role::kMatrix);
    l.wo = find(p + "attn_output.weight", hp_.n_embd, hp_.n_embd, true, Role::kMatrix);
    l.attn_sub_norm = find(p + "attn_sub_norm.weight", hp_.n_embd, 0, false, Role::kNorm);
    l.ffn_norm = find(p + "ffn_norm.weight", hp_.n_embd, 0, true, Role::kNorm);
    l.ffn_gate = find(p + "ffn_gate.weight", hp_.n_embd, hp_.n_ff, true, Role::kMatrix);
    l.ffn_up = find(p + "ffn_up.weight", hp_.n_embd, hp_.n_ff, true, Role::kMatrix);
    l.ffn_down = find(p + "ffn_down.weight", hp_.n_ff, hp_.n_embd, true, Role::kMatrix);
    l.ffn_sub_norm = find(p + "ffn_sub_norm.weight", hp_.n_ff, 0, false, Role::kNorm);
  }
}

void BitNetEngine::allocate_cache() {
  ggml_init_params params{};
  params.mem_size = ggml_tensor_overhead() * 2 * static_cast<size_t>(hp_.n_layer) + 1024;
  params.no_alloc = true;
  cache_ctx_.reset(ggml_init(params));
  const int64_t n_cells = static_cast<int64_t>(config_.n_ctx) * hp_.n_embd_kv();
  for (int il = 0; il < hp_.n_layer; ++il) {
    layers_[il].k_cache = ggml_new_tensor_1d(cache_ctx_.get(), GGML_TYPE_F16, n_cells);
    layers_[il].v_cache = ggml_new_tensor_1d(cache_ctx_.get(), GGML_TYPE_F16, n_cells);
  }
  cache_buf_.reset(ggml_backend_alloc_ctx_tensors(cache_ctx_.get(), backend_.get()));
  if (!cache_buf_) {
    throw EngineError("cannot allocate the KV cache (" + std::to_string(2 * n_cells * hp_.n_layer * 2 / (1 << 20)) +
                      " MiB for n_ctx=" + std::to_string(config_.n_ctx) + "); lower n_ctx");
  }
  // Not cleared: decode only reads cells it has written, and untouched pages cost no memory.
}

void BitNetEngine::choose_kernels() {
  const std::string& choice = config_.kernels;
  if (choice != "auto" && choice != "bitnet" && choice != "ggml") {
    throw InvalidArgument("kernels must be 'auto', 'bitnet' or 'ggml', not '" + choice + "'");
  }
  const kernels::Impl& best = kernels::best_impl();
  const bool fast = std::string(best.name) != "scalar";
  std::vector<ggml_tensor*> ternary;
  for (const Layer& l : layers_) {
    for (ggml_tensor* t : {l.wq, l.wk, l.wv, l.wo, l.ffn_gate, l.ffn_up, l.ffn_down}) {
      if (t->type == GGML_TYPE_TQ1_0 || t->type == GGML_TYPE_TQ2_0) ternary.push_back(t);
    }
  }
  n_ternary_ = static_cast<int>(ternary.size());
  if (choice == "ggml" || (choice == "auto" && !fast)) return;
  kernel_impl_ = &best;
  // TQ1_0 (base-3 packing) and TQ2_0 rows with several block scales stay with ggml; kernels()
  // says so and Python warns.
  std::vector<ggml_tensor*> candidates;
  for (ggml_tensor* t : ternary) {
    if (t->type == GGML_TYPE_TQ2_0 && t->ne[0] % kernels::kTq2Block == 0) candidates.push_back(t);
  }
  // The head too, when it is Q6_K and the CPU has our kernel for it (AVX2); a copy of it goes
  // into the huge-page arena with the ternary weights.
  const bool own_head = output_->type == GGML_TYPE_Q6_K && output_->ne[0] % kernels::kQ6KBlock == 0 &&
                        kernels::q6k_dot_avx2() != nullptr;
  if (!candidates.empty()) {
    packed_ = packed_weights(path_, file_->data(), candidates, own_head ? output_ : nullptr, config_.n_threads);
  }
  for (ggml_tensor* t : candidates) {
    auto it = packed_->by_offset.find(static_cast<size_t>(static_cast<const uint8_t*>(t->data) - file_->data()));
    if (it == packed_->by_offset.end()) continue;
    own_kernel_.emplace(t, &it->second.matrix);
    file_->release(static_cast<const uint8_t*>(t->data), ggml_nbytes(t));  // nothing reads them again
  }
  if (own_kernel_.empty()) {
    kernel_impl_ = nullptr;
    packed_.reset();
  }
  if (kernel_impl_ != nullptr && packed_->head != nullptr) {
    head_.dot = kernels::q6k_dot_avx2();
    head_.data = packed_->head;
    file_->release(static_cast<const uint8_t*>(output_->data), ggml_nbytes(output_));  // re-read if get_rows needs it
  }
  op_states_ = std::vector<ops::TernaryOpState>(own_kernel_.size());  // one per ternary matmul of a graph
}

std::string BitNetEngine::kernels() const {
  if (kernel_impl_ == nullptr) return "ggml";
  std::string out = std::string("bitnet:") + kernel_impl_->name;
  if (static_cast<int>(own_kernel_.size()) < n_ternary_) {
    out += " (" + std::to_string(own_kernel_.size()) + "/" + std::to_string(n_ternary_) + " tensors, ggml the rest)";
  }
  return out;
}

ggml_tensor* BitNetEngine::matmul(ggml_context* ctx, ggml_tensor* w, ggml_tensor* x, ggml_tensor** xq) {
  if (kernel_impl_ == nullptr || own_kernel_.count(w) == 0) return ggml_mul_mat(ctx, w, x);
  if (*xq == nullptr) {
    if (!ggml_is_contiguous(x)) x = ggml_cont(ctx, x);
    ggml_tensor* args[] = {x};
    *xq = ggml_custom_4d(ctx, GGML_TYPE_I8, x->ne[0] + ops::kQuantTail, x->ne[1], 1, 1, args, 1, &ops::quantize_op,
                         GGML_N_TASKS_MAX, nullptr);
  }
  if (n_op_states_ == op_states_.size()) {
    throw EngineError("internal: more ternary matmuls in one graph than BitNetEngine prepared for");
  }
  ops::TernaryOpState* state = &op_states_[n_op_states_++];
  state->impl = kernel_impl_;
  state->w = own_kernel_.find(w)->second;
  state->next_row.store(0, std::memory_order_relaxed);  // the graph runs after it is built
  ggml_tensor* args[] = {w, *xq};
  return ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], x->ne[1], 1, 1, args, 2, &ops::ternary_op, GGML_N_TASKS_MAX,
                        state);
}

ggml_tensor* BitNetEngine::head(ggml_context* ctx, ggml_tensor* x) {
  if (head_.dot == nullptr) return ggml_mul_mat(ctx, output_, x);
  if (!ggml_is_contiguous(x)) x = ggml_cont(ctx, x);
  head_.next_row.store(0, std::memory_order_relaxed);  // one head per graph; it runs after it is built
  ggml_tensor* args[] = {output_, x};
  return ggml_custom_4d(ctx, GGML_TYPE_F32, output_->ne[1], x->ne[1], 1, 1, args, 2, &ops::head_op, GGML_N_TASKS_MAX,
                        &head_);
}

ggml_cgraph* BitNetEngine::build_graph(ggml_context* ctx, int n_tokens, int pos0, bool all_logits,
                                       GraphInputs* in) {
  n_op_states_ = 0;
  const int n_kv = pos0 + n_tokens;
  const int head_dim = hp_.head_dim();
  const int n_embd_kv = hp_.n_embd_kv();
  const size_t f16 = ggml_type_size(GGML_TYPE_F16);
  ggml_cgraph* gf = ggml_new_graph_custom(ctx, graph_nodes_, false);

  in->tokens = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_tokens);
  in->positions = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_tokens);
  in->mask = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_kv, n_tokens);
  ggml_set_input(in->tokens);
  ggml_set_input(in->positions);
  ggml_set_input(in->mask);

  auto norm = [&](ggml_tensor* x, ggml_tensor* weight) {
    return ggml_mul(ctx, ggml_rms_norm(ctx, x, hp_.rms_eps), weight);
  };
  auto rope = [&](ggml_tensor* x) {
    return ggml_rope_ext(ctx, x, in->positions, nullptr, hp_.n_rot, GGML_ROPE_TYPE_NEOX, hp_.n_ctx_train,
                         hp_.rope_freq_base, 1.0f, 0.0f, 1.0f, 32.0f, 1.0f);
  };

  ggml_tensor* x = ggml_get_rows(ctx, tok_embd_, in->tokens);  // [n_embd, n_tokens]
  auto last_column = [&](ggml_tensor* t) {
    return ggml_view_2d(ctx, t, t->ne[0], 1, t->nb[1], static_cast<size_t>(n_tokens - 1) * t->nb[1]);
  };
  for (size_t il = 0; il < layers_.size(); ++il) {
    const Layer& l = layers_[il];
    ggml_tensor* h = norm(x, l.attn_norm);
    ggml_tensor* hq = nullptr;
    ggml_tensor* q = rope(ggml_reshape_3d(ctx, matmul(ctx, l.wq, h, &hq), head_dim, hp_.n_head, n_tokens));
    ggml_tensor* k = rope(ggml_reshape_3d(ctx, matmul(ctx, l.wk, h, &hq), head_dim, hp_.n_head_kv, n_tokens));
    ggml_tensor* v = matmul(ctx, l.wv, h, &hq);  // [n_embd_kv, n_tokens]

    // Append this chunk to the cache; the copies enter the graph before the reads below.
    ggml_tensor* k_dst = ggml_view_1d(ctx, l.k_cache, static_cast<int64_t>(n_tokens) * n_embd_kv,
                                      static_cast<size_t>(pos0) * n_embd_kv * f16);
    ggml_tensor* v_dst = ggml_view_2d(ctx, l.v_cache, n_tokens, n_embd_kv, static_cast<size_t>(config_.n_ctx) * f16,
                                      static_cast<size_t>(pos0) * f16);
    ggml_build_forward_expand(gf, ggml_cpy(ctx, k, k_dst));
    ggml_build_forward_expand(gf, ggml_cpy(ctx, ggml_transpose(ctx, v), v_dst));

    ggml_tensor* keys = ggml_view_3d(ctx, l.k_cache, head_dim, n_kv, hp_.n_head_kv, n_embd_kv * f16, head_dim * f16, 0);
    ggml_tensor* values = ggml_view_3d(ctx, l.v_cache, n_kv, head_dim, hp_.n_head_kv, config_.n_ctx * f16,
                                       static_cast<size_t>(config_.n_ctx) * head_dim * f16, 0);
    // Heads of q share kv heads in consecutive groups: ggml_mul_mat broadcasts dim 2 that way.
    ggml_tensor* scores = ggml_mul_mat(ctx, keys, ggml_permute(ctx, q, 0, 2, 1, 3));  // [n_kv, n_tokens, n_head]
    scores = ggml_soft_max_ext(ctx, scores, in->mask, 1.0f / std::sqrt(static_cast<float>(head_dim)), 0.0f);
    ggml_tensor* attn = ggml_mul_mat(ctx, values, scores);  // [head_dim, n_tokens, n_head]
    attn = ggml_cont_2d(ctx, ggml_permute(ctx, attn, 0, 2, 1, 3), hp_.n_embd, n_tokens);
    if (il + 1 == layers_.size() && !all_logits && n_tokens > 1) {
      // Past the last attention only the last token matters for its logits.
      attn = last_column(attn);
      x = last_column(x);
    }
    if (l.attn_sub_norm != nullptr) attn = norm(attn, l.attn_sub_norm);
    ggml_tensor* attn_q = nullptr;
    x = ggml_add(ctx, x, matmul(ctx, l.wo, attn, &attn_q));

    h = norm(x, l.ffn_norm);
    hq = nullptr;
    ggml_tensor* gate = matmul(ctx, l.ffn_gate, h, &hq);
    gate = hp_.activation == FfnActivation::kReluSquared ? ggml_sqr(ctx, ggml_relu(ctx, gate)) : ggml_silu(ctx, gate);
    ggml_tensor* ffn = ggml_mul(ctx, gate, matmul(ctx, l.ffn_up, h, &hq));
    if (l.ffn_sub_norm != nullptr) ffn = norm(ffn, l.ffn_sub_norm);
    ggml_tensor* ffn_q = nullptr;
    x = ggml_add(ctx, x, matmul(ctx, l.ffn_down, ffn, &ffn_q));
  }
  in->logits = head(ctx, norm(x, output_norm_));
  ggml_set_output(in->logits);
  ggml_build_forward_expand(gf, in->logits);
  return gf;
}

bool BitNetEngine::decode(const int32_t* tokens, int n_tokens, int pos0, bool all_logits, float* logits) {
  check_decode_args(tokens, n_tokens, pos0, n_cached_);
  n_cached_ = pos0;
  for (int done = 0; done < n_tokens;) {
    const int chunk = std::min(config_.n_batch, n_tokens - done);
    const bool last_chunk = done + chunk == n_tokens;
    float* out = all_logits ? logits + static_cast<size_t>(done) * hp_.n_vocab : (last_chunk ? logits : nullptr);
    if (!decode_chunk(tokens + done, chunk, pos0 + done, all_logits, out)) return false;
    done += chunk;
    n_cached_ = pos0 + done;
  }
  return true;
}

bool BitNetEngine::decode_chunk(const int32_t* tokens, int n_tokens, int pos0, bool all_logits, float* logits) {
  if (abort_callback(this)) return false;
  ggml_init_params params{};
  params.mem_size = graph_arena_.size();
  params.mem_buffer = graph_arena_.data();
  params.no_alloc = true;
  ggml_context_ptr ctx(ggml_init(params));
  GraphInputs in;
  ggml_cgraph* gf = build_graph(ctx.get(), n_tokens, pos0, all_logits, &in);
  if (!ggml_gallocr_alloc_graph(galloc_.get(), gf)) throw EngineError("cannot allocate the compute graph");

  ggml_backend_tensor_set(in.tokens, tokens, 0, sizeof(int32_t) * n_tokens);
  std::vector<int32_t> positions(n_tokens);
  for (int i = 0; i < n_tokens; ++i) positions[i] = pos0 + i;
  ggml_backend_tensor_set(in.positions, positions.data(), 0, sizeof(int32_t) * n_tokens);
  const int n_kv = pos0 + n_tokens;
  std::vector<float> mask(static_cast<size_t>(n_kv) * n_tokens);
  for (int i = 0; i < n_tokens; ++i) {
    for (int j = 0; j < n_kv; ++j) {
      mask[static_cast<size_t>(i) * n_kv + j] = j <= pos0 + i ? 0.0f : -std::numeric_limits<float>::infinity();
    }
  }
  ggml_backend_tensor_set(in.mask, mask.data(), 0, sizeof(float) * mask.size());

  ggml_backend_cpu_set_n_threads(backend_.get(), n_tokens > 1 ? config_.n_threads_batch : config_.n_threads);
  const ggml_status status = ggml_backend_graph_compute(backend_.get(), gf);
  if (status == GGML_STATUS_ABORTED) return false;
  if (status != GGML_STATUS_SUCCESS) throw EngineError(std::string("graph compute failed: ") + ggml_status_to_string(status));
  if (logits != nullptr) ggml_backend_tensor_get(in.logits, logits, 0, ggml_nbytes(in.logits));
  return true;
}

void BitNetEngine::trim_cache(int n_keep) {
  if (n_keep < 0) throw InvalidArgument("n_keep must be >= 0");
  n_cached_ = std::min(n_cached_, n_keep);
}

void BitNetEngine::set_threads(int n_threads, int n_threads_batch) {
  if (n_threads < 1 || n_threads_batch < 1) throw InvalidArgument("thread counts must be >= 1");
  config_.n_threads = n_threads;
  config_.n_threads_batch = n_threads_batch;
}

}  // namespace bitnet::engine
