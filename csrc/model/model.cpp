#include "model/model.h"

#include "engine/bitnet_engine.h"
#include "engine/llama_engine.h"
#include "errors.h"
#include "gguf_file.h"

namespace bitnet::model {

Model::Model(const std::string& path, const ModelOptions& options) : path_(path) {
  ggml_context* tensors = nullptr;
  gguf_context_ptr gguf = open_gguf(path, &tensors);
  ggml_context_ptr tensors_owner(tensors);
  architecture_ = gguf_string(gguf.get(), "general.architecture", "");
  std::string kind = options.engine;
  if (kind == "auto") kind = engine::is_bitnet_arch(architecture_) ? "bitnet" : "llama";
  if (kind == "bitnet") {
    auto bitnet = std::make_unique<engine::BitNetEngine>(path, std::move(gguf), std::move(tensors_owner), options.config);
    // The vocabulary's checks read the metadata the engine already parsed.
    vocab_ = std::make_unique<Vocab>(
        engine::load_llama_model(path, /*vocab_only=*/true, options.config.use_mmap, bitnet->metadata()));
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
  cache_ = std::make_unique<KvCache>(*engine_);
}

ModelLease::ModelLease(std::mutex& mutex, std::atomic<std::thread::id>& owner) : owner_(&owner) {
  if (owner.load() == std::this_thread::get_id()) {
    throw EngineError("this thread is still iterating a stream of this model; finish or close "
                      "that stream before starting another call");
  }
  lock_ = std::unique_lock<std::mutex>(mutex);
  owner.store(std::this_thread::get_id());
}

void ModelLease::release() {
  if (lock_.owns_lock()) {
    owner_->store(std::thread::id());
    lock_.unlock();
  }
}

ModelLease Model::acquire() { return ModelLease(mutex_, owner_); }

std::vector<float> Model::logits(const std::vector<int32_t>& tokens,
                                 const std::function<bool()>& interrupt_check) {
  if (tokens.empty()) throw InvalidArgument("logits() needs at least one token");
  ModelLease lease = acquire();
  engine::ScopedInterruptCheck check(*engine_, interrupt_check);
  std::vector<float> out(tokens.size() * static_cast<size_t>(engine_->n_vocab()));
  engine_->reset_abort();
  cache_->clear();
  if (!cache_->append(tokens.data(), static_cast<int>(tokens.size()), true, out.data())) {
    throw EngineError("logits() was aborted");
  }
  return out;
}

std::unique_ptr<Generator> Model::start(std::vector<int32_t> prompt, SamplingParams params) {
  ModelSession session{*engine_, *vocab_, *cache_, acquire()};
  return std::make_unique<Generator>(shared_from_this(), std::move(session), std::move(prompt), std::move(params));
}

void Model::set_threads(int n_threads, int n_threads_batch) {
  ModelLease lease = acquire();
  engine_->set_threads(n_threads, n_threads_batch);
}

}  // namespace bitnet::model
