// A loaded model: engine + vocabulary + the lock that serializes their use.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "model/generator.h"
#include "model/kv_cache.h"
#include "model/vocab.h"

namespace bitnet::model {

struct ModelOptions {
  std::string engine = "auto";  // "auto" | "bitnet" | "llama"
  engine::EngineConfig config;
};

// Held by a shared_ptr: a running Generator keeps its model alive.
class Model : public std::enable_shared_from_this<Model> {
 public:
  Model(const std::string& path, const ModelOptions& options);

  const std::string& path() const { return path_; }
  const char* engine_name() const { return engine_->name(); }
  std::string kernels() const { return engine_->kernels(); }
  const std::string& architecture() const { return architecture_; }
  int n_ctx() const { return engine_->n_ctx(); }
  int n_vocab() const { return engine_->n_vocab(); }
  const Vocab& vocab() const { return *vocab_; }

  // Logits of every token of `tokens`, computed from an empty cache: (n_tokens, n_vocab).
  std::vector<float> logits(const std::vector<int32_t>& tokens,
                            const std::function<bool()>& interrupt_check = nullptr);

  // Starts a generation; it holds the model (lock and lifetime) until it finishes or is destroyed.
  std::unique_ptr<Generator> start(std::vector<int32_t> prompt, SamplingParams params);

  void set_threads(int n_threads, int n_threads_batch);

  // Stops the running decode (from any thread); the generation ends with finish_reason "abort".
  void abort() { engine_->request_abort(); }

 private:
  ModelLease acquire();

  std::string path_;
  std::string architecture_;
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<Vocab> vocab_;
  std::mutex mutex_;
  std::atomic<std::thread::id> owner_{};  // thread holding mutex_, to report re-entrant use
  std::unique_ptr<KvCache> cache_;        // over engine_
};

}  // namespace bitnet::model
