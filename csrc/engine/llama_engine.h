// LlamaEngine: libllama's own model graph, for every GGUF architecture BitNetEngine does not run.
#pragma once

#include <memory>
#include <string>

#include "engine/engine.h"
#include "gguf.h"
#include "llama.h"

namespace bitnet::engine {

struct LlamaModelDeleter {
  void operator()(llama_model* model) const { llama_model_free(model); }
};
using SharedLlamaModel = std::shared_ptr<llama_model>;

// Loads a llama_model (vocab_only: tokenizer and metadata, no weights), after checking what
// libllama would abort on. `metadata`: the file's already parsed GGUF metadata, if the caller
// has it (else it is parsed here). Throws ModelLoadError.
SharedLlamaModel load_llama_model(const std::string& path, bool vocab_only, bool use_mmap, int n_gpu_layers,
                                  const gguf_context* metadata = nullptr);

class LlamaEngine final : public Engine {
 public:
  LlamaEngine(const std::string& path, const EngineConfig& config);
  ~LlamaEngine() override;

  const char* name() const override { return "llama"; }
  int n_vocab() const override { return n_vocab_; }
  int n_ctx() const override { return config_.n_ctx; }
  int n_batch() const override { return config_.n_batch; }
  int n_threads() const override { return config_.n_threads; }
  void set_threads(int n_threads, int n_threads_batch) override;

  const SharedLlamaModel& model() const { return model_; }

 protected:
  bool run_batch(const BatchToken* batch, int n_tokens, float* logits) override;
  void drop_positions(int seq, int n_keep) override;
  void copy_positions(int src, int dst, int n) override;

 private:
  EngineConfig config_;
  SharedLlamaModel model_;
  llama_context* ctx_ = nullptr;
  int n_vocab_ = 0;
};

}  // namespace bitnet::engine
