#include "engine/llama_engine.h"

#include <algorithm>
#include <cstring>

#include "errors.h"
#include "engine/llama_checks.h"
#include "gguf_file.h"
#include "model/vocab_check.h"

namespace bitnet::engine {

SharedLlamaModel load_llama_model(const std::string& path, bool vocab_only, bool use_mmap, int n_gpu_layers,
                                  const gguf_context* metadata) {
  {
    gguf_context_ptr parsed;
    if (metadata == nullptr) {
      parsed = open_gguf(path, nullptr);
      metadata = parsed.get();
    }
    model::check_vocabulary_metadata(metadata, path);
    // A vocabulary-only load reads no hyper-parameters; a full one builds graphs from them.
    if (!vocab_only) check_llama_hparams(metadata, path);
  }
  llama_model_params params = llama_model_default_params();
  params.vocab_only = vocab_only;
  params.n_gpu_layers = vocab_only ? 0 : n_gpu_layers;
  params.load_mode = use_mmap ? LLAMA_LOAD_MODE_MMAP : LLAMA_LOAD_MODE_NONE;
  llama_model* model = llama_model_load_from_file(path.c_str(), params);
  if (model == nullptr) {
    throw ModelLoadError("llama.cpp could not load '" + path +
                         "' (unknown architecture, missing tensors or a damaged file; the "
                         "bitnet.native log has llama.cpp's reason)");
  }
  SharedLlamaModel shared(model, LlamaModelDeleter());
  model::check_loaded_vocabulary(model, path);
  return shared;
}

LlamaEngine::LlamaEngine(const std::string& path, const EngineConfig& config)
    : Engine(config.n_seq), config_(config), model_(load_llama_model(path, false, config.use_mmap, config.n_gpu_layers)) {
  constexpr int kMaxSeq = 256;  // LLAMA_MAX_SEQ (src/llama-cparams.h): libllama aborts beyond it
  if (config_.n_seq < 1 || config_.n_seq > kMaxSeq) {
    throw InvalidArgument("n_seq must be in [1, " + std::to_string(kMaxSeq) + "] for engine='llama'");
  }
  llama_context_params params = llama_context_default_params();
  // One cache for every sequence (each may use n_ctx of it); a copied prefix shares cells.
  params.n_ctx = static_cast<uint32_t>(static_cast<int64_t>(config_.n_ctx) * config_.n_seq);
  params.n_batch = static_cast<uint32_t>(config_.n_batch);
  params.n_ubatch = static_cast<uint32_t>(config_.n_batch);
  params.n_seq_max = static_cast<uint32_t>(config_.n_seq);
  params.kv_unified = true;
  params.n_threads = config_.n_threads;
  params.n_threads_batch = config_.n_threads_batch;
  params.abort_callback = &Engine::abort_callback;
  params.abort_callback_data = this;
  params.no_perf = true;
  ctx_ = llama_init_from_model(model_.get(), params);
  if (ctx_ == nullptr) {
    throw EngineError("llama.cpp could not create a context for '" + path + "' with n_ctx=" +
                      std::to_string(config_.n_ctx) + "; lower n_ctx");
  }
  // libllama adjusts both (n_batch is clamped to n_ctx): decode in the chunks it accepts, or
  // it asserts (n_tokens_all <= n_batch) and aborts.
  config_.n_ctx = static_cast<int>(llama_n_ctx(ctx_) / static_cast<uint32_t>(config_.n_seq));
  config_.n_batch = static_cast<int>(std::min(llama_n_batch(ctx_), llama_n_ubatch(ctx_)));
  n_vocab_ = llama_vocab_n_tokens(llama_model_get_vocab(model_.get()));
}

LlamaEngine::~LlamaEngine() { llama_free(ctx_); }

bool LlamaEngine::run_batch(const BatchToken* batch, int n_tokens, float* logits) {
  llama_memory_t mem = llama_get_memory(ctx_);
  llama_batch b = llama_batch_init(n_tokens, 0, 1);
  for (int i = 0; i < n_tokens; ++i) {
    const BatchToken& t = batch[i];
    // libllama wants each sequence to continue right after what its memory holds.
    if (i == 0 || batch[i - 1].seq != t.seq) llama_memory_seq_rm(mem, t.seq, t.pos, -1);
    b.token[i] = t.token;
    b.pos[i] = t.pos;
    b.n_seq_id[i] = 1;
    b.seq_id[i][0] = t.seq;
    b.logits[i] = t.logits;
  }
  b.n_tokens = n_tokens;
  const int32_t rc = llama_decode(ctx_, b);
  if (rc == 0 && logits != nullptr) {
    size_t row = 0;
    for (int i = 0; i < n_tokens; ++i) {
      if (!b.logits[i]) continue;
      std::memcpy(logits + row * n_vocab_, llama_get_logits_ith(ctx_, i), sizeof(float) * n_vocab_);
      ++row;
    }
  }
  llama_batch_free(b);
  if (rc == 2) return false;  // aborted: the next batch replaces what it left
  if (rc != 0) throw EngineError("llama_decode failed with code " + std::to_string(rc));
  return true;
}

void LlamaEngine::drop_positions(int seq, int n_keep) {
  llama_memory_seq_rm(llama_get_memory(ctx_), seq, n_keep, -1);
}

void LlamaEngine::copy_positions(int src, int dst, int n) {
  llama_memory_t mem = llama_get_memory(ctx_);
  llama_memory_seq_rm(mem, dst, -1, -1);
  llama_memory_seq_cp(mem, src, dst, 0, n);
}

void LlamaEngine::set_threads(int n_threads, int n_threads_batch) {
  if (n_threads < 1 || n_threads_batch < 1) throw InvalidArgument("thread counts must be >= 1");
  config_.n_threads = n_threads;
  config_.n_threads_batch = n_threads_batch;
  llama_set_n_threads(ctx_, n_threads, n_threads_batch);
}

}  // namespace bitnet::engine
