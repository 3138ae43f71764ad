// A loaded model: engine + vocabulary + the scheduler that runs every generation on them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "model/generator.h"
#include "model/scheduler.h"
#include "model/vocab.h"

namespace bitnet::model {

struct ModelOptions {
  std::string engine = "auto";  // "auto" | "bitnet" | "llama"
  engine::EngineConfig config;  // n_seq 0: 4 sequences on engine "bitnet", 1 on "llama"
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
  int n_seq() const { return engine_->n_seq(); }
  int n_batch() const { return engine_->n_batch(); }
  const Vocab& vocab() const { return *vocab_; }
  Scheduler& scheduler() { return *scheduler_; }

  // Logits of every token of `tokens`, computed from an empty cache: (n_tokens, n_vocab).
  // `interrupt_check` is polled every 50 ms while waiting; true cancels.
  std::vector<float> logits(const std::vector<int32_t>& tokens,
                            const std::function<bool()>& interrupt_check = nullptr);

  // Starts a generation on the scheduler (it runs alongside the model's other generations);
  // the generator keeps the model alive.
  std::unique_ptr<Generator> start(std::vector<int32_t> prompt, SamplingParams params);

  void set_threads(int n_threads, int n_threads_batch);

  // Ends every running and queued generation (finish_reason "abort"); safe from any thread.
  void abort() { scheduler_->cancel_all(); }

 private:
  std::string path_;
  std::string architecture_;
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<Vocab> vocab_;
  std::unique_ptr<Scheduler> scheduler_;  // last: stopped before the engine goes
};

}  // namespace bitnet::model
