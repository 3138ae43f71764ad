#include "engine/llama_engine.h"

#include <algorithm>
#include <cstring>

#include "errors.h"
#include "engine/llama_checks.h"
#include "gguf_file.h"
#include "model/vocab_check.h"

namespace bitnet::engine {

SharedLlamaModel load_llama_model(const std::string& path, bool vocab_only, bool use_mmap,
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
    : config_(config), model_(load_llama_model(path, false, config.use_mmap)) {
  llama_context_params params = llama_context_default_params();
  params.n_ctx = static_cast<uint32_t>(config_.n_ctx);
  params.n_batch = static_cast<uint32_t>(config_.n_batch);
  params.n_ubatch = static_cast<uint32_t>(config_.n_batch);
  params.n_seq_max = 1;
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
  config_.n_ctx = static_cast<int>(llama_n_ctx(ctx_));
  config_.n_batch = static_cast<int>(std::min(llama_n_batch(ctx_), llama_n_ubatch(ctx_)));
  n_vocab_ = llama_vocab_n_tokens(llama_model_get_vocab(model_.get()));
}

LlamaEngine::~LlamaEngine() { llama_free(ctx_); }

bool LlamaEngine::decode(const int32_t* tokens, int n_tokens, int pos0, bool all_logits, float* logits) {
  check_decode_args(tokens, n_tokens, pos0, n_cached_);
  trim_cache(pos0);
  llama_batch batch = llama_batch_init(config_.n_batch, 0, 1);
  bool ok = true;
  for (int done = 0; done < n_tokens && ok;) {
    const int chunk = std::min(config_.n_batch, n_tokens - done);
    batch.n_tokens = chunk;
    for (int i = 0; i < chunk; ++i) {
      batch.token[i] = tokens[done + i];
      batch.pos[i] = pos0 + done + i;
      batch.n_seq_id[i] = 1;
      batch.seq_id[i][0] = 0;
      batch.logits[i] = all_logits || done + i == n_tokens - 1;
    }
    const int32_t rc = llama_decode(ctx_, batch);
    if (rc == 2) {
      ok = false;  // aborted: the chunk's partial cache entries are dropped below
      break;
    }
    if (rc != 0) {
      llama_batch_free(batch);
      trim_cache(pos0 + done);
      throw EngineError("llama_decode failed with code " + std::to_string(rc));
    }
    for (int i = 0; i < chunk; ++i) {
      if (!batch.logits[i]) continue;
      const size_t row = all_logits ? static_cast<size_t>(done + i) : 0;
      std::memcpy(logits + row * n_vocab_, llama_get_logits_ith(ctx_, i), sizeof(float) * n_vocab_);
    }
    done += chunk;
    n_cached_ = pos0 + done;
  }
  llama_batch_free(batch);
  if (!ok) trim_cache(n_cached_);
  return ok;
}

void LlamaEngine::trim_cache(int n_keep) {
  if (n_keep < 0) throw InvalidArgument("n_keep must be >= 0");
  llama_memory_t mem = llama_get_memory(ctx_);
  if (n_keep == 0) {
    llama_memory_clear(mem, true);
  } else {
    llama_memory_seq_rm(mem, 0, n_keep, -1);
  }
  n_cached_ = std::min(n_cached_, n_keep);
}

void LlamaEngine::set_threads(int n_threads, int n_threads_batch) {
  if (n_threads < 1 || n_threads_batch < 1) throw InvalidArgument("thread counts must be >= 1");
  config_.n_threads = n_threads;
  config_.n_threads_batch = n_threads_batch;
  llama_set_n_threads(ctx_, n_threads, n_threads_batch);
}

}  // namespace bitnet::engine
