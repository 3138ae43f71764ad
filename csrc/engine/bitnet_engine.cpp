#include "engine/bitnet_engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
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
    : Engine(config.n_seq), config_(config), path_(path), gguf_(std::move(gguf)), weights_ctx_(std::move(tensors)) {
  load_hparams(path);
  if (config_.n_ctx < 1) throw InvalidArgument("n_ctx must be >= 1");
  if (config_.n_batch < 1) throw InvalidArgument("n_batch must be >= 1");
  if (config_.n_seq < 1) throw InvalidArgument("n_seq must be >= 1");
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
  const int64_t n_cells = static_cast<int64_t>(config_.n_ctx) * config_.n_seq;
  for (int il = 0; il < hp_.n_layer; ++il) {
    layers_[il].k_cache = ggml_new_tensor_2d(cache_ctx_.get(), GGML_TYPE_F16, hp_.n_embd_kv(), n_cells);
    layers_[il].v_cache = ggml_new_tensor_2d(cache_ctx_.get(), GGML_TYPE_F16, hp_.n_embd_kv(), n_cells);
  }
  cache_buf_.reset(ggml_backend_alloc_ctx_tensors(cache_ctx_.get(), backend_.get()));
  if (!cache_buf_) {
    const int64_t mib = 2 * n_cells * hp_.n_embd_kv() * hp_.n_layer * 2 / (1 << 20);
    throw EngineError("cannot allocate the KV cache (" + std::to_string(mib) + " MiB for n_ctx=" +
                      std::to_string(config_.n_ctx) + " x n_seq=" + std::to_string(config_.n_seq) +
                      "); lower n_ctx or n_seq");
  }
  // Not cleared: attention reads only the cells a sequence has written, and untouched pages cost
  // no memory, so each sequence's share grows with its use.
  attention_.resize(static_cast<size_t>(hp_.n_layer));
  for (int il = 0; il < hp_.n_layer; ++il) {
    ops::AttentionOpState& a = attention_[il];
    a.shape.n_head = hp_.n_head;
    a.shape.n_head_kv = hp_.n_head_kv;
    a.shape.head_dim = hp_.head_dim();
    a.shape.cell_stride = hp_.n_embd_kv();
    a.shape.scale = 1.0f / std::sqrt(static_cast<float>(hp_.head_dim()));
    a.k_cache = static_cast<const uint16_t*>(layers_[il].k_cache->data);
    a.v_cache = static_cast<const uint16_t*>(layers_[il].v_cache->data);
  }
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
    packed_ = packed_weights(path_, file_->data(), candidates, own_head ? output_ : nullptr, config_.n_threads,
                             [this](const uint8_t* p, size_t n) { file_->release(p, n); });
  }
  for (ggml_tensor* t : candidates) {
    auto it = packed_->by_offset.find(static_cast<size_t>(static_cast<const uint8_t*>(t->data) - file_->data()));
    if (it == packed_->by_offset.end()) continue;
    own_kernel_.emplace(t, &it->second.matrix);
  }
  if (own_kernel_.empty()) {
    kernel_impl_ = nullptr;
    packed_.reset();
  }
  if (kernel_impl_ != nullptr && packed_->head != nullptr) {
    head_.dot = kernels::q6k_dot_avx2();
    head_.dot2 = kernels::q6k_dot2_avx2();
    head_.dot4 = kernels::q6k_dot4_avx2();
    head_.data = packed_->head;
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
                         GGML_N_TASKS_MAX, const_cast<kernels::Impl*>(kernel_impl_));
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

ggml_cgraph* BitNetEngine::build_graph(ggml_context* ctx, int n_tokens, int n_out, bool head_needed,
                                       GraphInputs* in) {
  n_op_states_ = 0;
  const int head_dim = hp_.head_dim();
  const int n_embd_kv = hp_.n_embd_kv();
  ggml_cgraph* gf = ggml_new_graph_custom(ctx, graph_nodes_, false);

  in->tokens = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_tokens);
  in->positions = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_tokens);
  in->cells = ggml_new_tensor_1d(ctx, GGML_TYPE_I64, n_tokens);
  ggml_set_input(in->tokens);
  ggml_set_input(in->positions);
  ggml_set_input(in->cells);
  in->out_ids = nullptr;
  if (n_out < n_tokens) {
    in->out_ids = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_out);
    ggml_set_input(in->out_ids);
  }

  auto norm = [&](ggml_tensor* x, ggml_tensor* weight) {
    return ggml_mul(ctx, ggml_rms_norm(ctx, x, hp_.rms_eps), weight);
  };
  auto rope = [&](ggml_tensor* x) {
    return ggml_rope_ext(ctx, x, in->positions, nullptr, hp_.n_rot, GGML_ROPE_TYPE_NEOX, hp_.n_ctx_train,
                         hp_.rope_freq_base, 1.0f, 0.0f, 1.0f, 32.0f, 1.0f);
  };

  ggml_tensor* x = ggml_get_rows(ctx, tok_embd_, in->tokens);  // [n_embd, n_tokens]
  for (size_t il = 0; il < layers_.size(); ++il) {
    const Layer& l = layers_[il];
    ggml_tensor* h = norm(x, l.attn_norm);
    ggml_tensor* hq = nullptr;
    ggml_tensor* q = rope(ggml_reshape_3d(ctx, matmul(ctx, l.wq, h, &hq), head_dim, hp_.n_head, n_tokens));
    ggml_tensor* k = rope(ggml_reshape_3d(ctx, matmul(ctx, l.wk, h, &hq), head_dim, hp_.n_head_kv, n_tokens));
    ggml_tensor* v = matmul(ctx, l.wv, h, &hq);  // [n_embd_kv, n_tokens]

    // Each token's key and value go to its sequence's cell for its position; the attention op
    // takes the writes as sources, so it runs after them.
    ggml_tensor* k_written = ggml_set_rows(ctx, l.k_cache, ggml_reshape_2d(ctx, k, n_embd_kv, n_tokens), in->cells);
    ggml_tensor* v_written = ggml_set_rows(ctx, l.v_cache, v, in->cells);
    ggml_tensor* args[] = {q, k_written, v_written};
    ggml_tensor* attn = ggml_custom_4d(ctx, GGML_TYPE_F32, hp_.n_embd, n_tokens, 1, 1, args, 3, &ops::attention_op,
                                       GGML_N_TASKS_MAX, &attention_[il]);
    if (il + 1 == layers_.size() && in->out_ids != nullptr) {
      // Past the last attention only the tokens whose logits are wanted matter.
      attn = ggml_get_rows(ctx, attn, in->out_ids);
      x = ggml_get_rows(ctx, x, in->out_ids);
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
  // Without wanted logits the graph ends at the last token's final hidden state (the cache
  // writes are what such a batch is for).
  in->logits = head_needed ? head(ctx, norm(x, output_norm_)) : norm(x, output_norm_);
  ggml_set_output(in->logits);
  ggml_build_forward_expand(gf, in->logits);
  return gf;
}

bool BitNetEngine::run_batch(const BatchToken* batch, int n_tokens, float* logits) {
  if (abort_callback(this)) return false;
  std::vector<int32_t> tokens(n_tokens), positions(n_tokens), out_ids;
  std::vector<int64_t> cells(n_tokens);
  first_cell_.resize(n_tokens);
  n_kv_.resize(n_tokens);
  for (int i = 0; i < n_tokens; ++i) {
    const BatchToken& t = batch[i];
    tokens[i] = t.token;
    positions[i] = t.pos;
    first_cell_[i] = static_cast<int64_t>(t.seq) * config_.n_ctx;
    n_kv_[i] = t.pos + 1;
    cells[i] = first_cell_[i] + t.pos;
    if (t.logits) out_ids.push_back(i);
  }
  const int n_out = static_cast<int>(out_ids.size());
  if (n_out == 0) out_ids.push_back(n_tokens - 1);  // the graph's output: see build_graph
  for (ops::AttentionOpState& a : attention_) {
    a.first_cell = first_cell_.data();
    a.n_kv = n_kv_.data();
  }

  ggml_init_params params{};
  params.mem_size = graph_arena_.size();
  params.mem_buffer = graph_arena_.data();
  params.no_alloc = true;
  ggml_context_ptr ctx(ggml_init(params));
  GraphInputs in;
  ggml_cgraph* gf = build_graph(ctx.get(), n_tokens, static_cast<int>(out_ids.size()), n_out > 0, &in);
  if (!ggml_gallocr_alloc_graph(galloc_.get(), gf)) throw EngineError("cannot allocate the compute graph");

  ggml_backend_tensor_set(in.tokens, tokens.data(), 0, sizeof(int32_t) * n_tokens);
  ggml_backend_tensor_set(in.positions, positions.data(), 0, sizeof(int32_t) * n_tokens);
  ggml_backend_tensor_set(in.cells, cells.data(), 0, sizeof(int64_t) * n_tokens);
  if (in.out_ids != nullptr) ggml_backend_tensor_set(in.out_ids, out_ids.data(), 0, sizeof(int32_t) * out_ids.size());

  ggml_backend_cpu_set_n_threads(backend_.get(), n_tokens > 1 ? config_.n_threads_batch : config_.n_threads);
  const ggml_status status = ggml_backend_graph_compute(backend_.get(), gf);
  if (status == GGML_STATUS_ABORTED) return false;
  if (status != GGML_STATUS_SUCCESS) throw EngineError(std::string("graph compute failed: ") + ggml_status_to_string(status));
  if (logits != nullptr && n_out > 0) ggml_backend_tensor_get(in.logits, logits, 0, ggml_nbytes(in.logits));
  return true;
}

void BitNetEngine::drop_positions(int /*seq*/, int /*n_keep*/) {
  // Nothing to free: attention never reads a sequence's cells beyond its position.
}

void BitNetEngine::copy_positions(int src, int dst, int n) {
  const size_t cell_bytes = static_cast<size_t>(hp_.n_embd_kv()) * ggml_type_size(GGML_TYPE_F16);
  const size_t from = static_cast<size_t>(src) * config_.n_ctx * cell_bytes;
  const size_t to = static_cast<size_t>(dst) * config_.n_ctx * cell_bytes;
  for (const Layer& l : layers_) {
    for (ggml_tensor* t : {l.k_cache, l.v_cache}) {
      auto* data = static_cast<uint8_t*>(t->data);
      std::memcpy(data + to, data + from, static_cast<size_t>(n) * cell_bytes);
    }
  }
}

void BitNetEngine::set_threads(int n_threads, int n_threads_batch) {
  if (n_threads < 1 || n_threads_batch < 1) throw InvalidArgument("thread counts must be >= 1");
  config_.n_threads = n_threads;
  config_.n_threads_batch = n_threads_batch;
}

}  // namespace bitnet::engine
