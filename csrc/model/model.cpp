#include "model/model.h"

#include <chrono>

#include "engine/bitnet_engine.h"
#include "engine/llama_engine.h"
#include "errors.h"
#include "gguf_file.h"

namespace bitnet::model {

Model::Model(const std::string& path, const ModelOptions& options_in) : path_(path) {
  ggml_context* tensors = nullptr;
  gguf_context_ptr gguf = open_gguf(path, &tensors);
  ggml_context_ptr tensors_owner(tensors);
  architecture_ = gguf_string(gguf.get(), "general.architecture", "");
  ModelOptions options = options_in;
  std::string kind = options.engine;
  if (kind == "auto") kind = engine::is_bitnet_arch(architecture_) ? "bitnet" : "llama";
  if (options.config.n_seq < 0) throw InvalidArgument("n_seq must be >= 1 (or 0 for the engine's default)");
  // Our engine's cache pages are touched only as sequences grow, so spare sequences cost address
  // space; libllama clears (and so commits) its whole cache up front.
  if (options.config.n_seq == 0) options.config.n_seq = kind == "bitnet" ? 4 : 1;
  if (kind == "bitnet") {
    auto bitnet = std::make_unique<engine::BitNetEngine>(path, std::move(gguf), std::move(tensors_owner), options.config);
    // The vocabulary's checks read the metadata the engine already parsed.
    vocab_ = std::make_unique<Vocab>(
        engine::load_llama_model(path, /*vocab_only=*/true, options.config.use_mmap, 0, bitnet->metadata()));
    engine_ = std::move(bitnet);
  } else if (kind == "llama") {
    if (options.config.kernels == "bitnet") {
      throw InvalidArgument("kernels='bitnet' needs BitNetEngine, but '" + path + "' runs on engine='llama' (" +
                            (architecture_.empty() ? std::string("no architecture") : "architecture '" + architecture_ + "'") +
                            "); use kernels='auto' or 'ggml'");
    }
    if (options.config.kernels != "auto" && options.config.kernels != "ggml") {
      throw InvalidArgument("kernels must be 'auto', 'bitnet' or 'ggml', not '" + options.config.kernels + "'");
    }
    auto llama = std::make_unique<engine::LlamaEngine>(path, options.config);
    vocab_ = std::make_unique<Vocab>(llama->model());
    engine_ = std::move(llama);
  } else {
    throw InvalidArgument("engine must be 'auto', 'bitnet' or 'llama', not '" + options.engine + "'");
  }
  if (vocab_->n_tokens() != engine_->n_vocab()) {
    throw ModelLoadError("'" + path + "' has " + std::to_string(vocab_->n_tokens()) +
                         " vocabulary entries but an embedding of " + std::to_string(engine_->n_vocab()) + " rows");
  }
  scheduler_ = std::make_unique<Scheduler>(*engine_, *vocab_);
}

std::vector<float> Model::logits(const std::vector<int32_t>& tokens,
                                 const std::function<bool()>& interrupt_check) {
  if (tokens.empty()) throw InvalidArgument("logits() needs at least one token");
  SamplingParams params;
  params.max_tokens = 0;
  auto seq = std::make_shared<Sequence>(tokens, params, *vocab_, engine_->n_vocab(), engine_->n_ctx(), true);
  scheduler_->submit(seq);
  while (!seq->wait_finished(std::chrono::milliseconds(50))) {
    if (interrupt_check && interrupt_check()) scheduler_->cancel(seq);
  }
  seq->rethrow_error();
  if (seq->stats().finish_reason == "abort") throw EngineError("logits() was aborted");
  return seq->take_logits();
}

std::unique_ptr<Generator> Model::start(std::vector<int32_t> prompt, SamplingParams params) {
  auto seq = std::make_shared<Sequence>(std::move(prompt), std::move(params), *vocab_, engine_->n_vocab(),
                                        engine_->n_ctx());
  auto generator = std::make_unique<Generator>(shared_from_this(), seq);
  scheduler_->submit(std::move(seq));
  return generator;
}

void Model::set_threads(int n_threads, int n_threads_batch) {
  scheduler_->with_engine([&](engine::Engine& e) { e.set_threads(n_threads, n_threads_batch); });
}

}  // namespace bitnet::model
