// The generation loop: prefill, sample, assemble text, stop. Runs without the GIL.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/sampler.h"
#include "model/session.h"
#include "model/utf8.h"

namespace bitnet::model {

class Model;

struct GenerationStats {
  std::string finish_reason;  // "stop" | "length" | "abort"
  std::vector<int32_t> tokens;
  int n_prompt = 0;
  int n_prompt_evaluated = 0;  // after reusing the cached prefix
  double prompt_ms = 0.0;
  double generation_ms = 0.0;
  int n_generation_decodes = 0;  // single-token decodes timed in generation_ms
};

// One generation. Holds the model's lock from construction until finish() or destruction, so
// the KV cache is never shared between two generations.
class Generator {
 public:
  // `model` keeps the model alive while this generator exists; `session` is what it uses of it.
  Generator(std::shared_ptr<Model> model, ModelSession session, std::vector<int32_t> prompt, SamplingParams params);
  ~Generator();
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;

  // Advances by one token (the first call also processes the prompt). Returns the text that
  // became final with it (often "", when bytes of a character or a possible stop string are
  // held back). After done() is true it returns "".
  std::string step();
  bool done() const { return finished_; }
  const GenerationStats& stats() const { return stats_; }
  const std::string& text() const { return final_text_; }

  // Steps to the end. `on_text` gets each non-empty piece and returns true to stop early.
  void run(const std::function<bool(const std::string&)>& on_text);

  // Ends the generation now (finish_reason "abort" when it was still running) and unlocks.
  void finish_early();

  // Safe from any thread, also before the first step: the generation ends with finish_reason
  // "abort" at the next graph node of its current decode (or at its next step).
  void cancel() { cancelled_.store(true, std::memory_order_relaxed); }

  // Polled during decodes while this generator steps (see Engine::set_interrupt_check).
  void set_interrupt_check(std::function<bool()> check) { interrupt_check_ = std::move(check); }

 private:
  std::string advance();  // one step's work; step() wraps it
  void prefill();
  std::string take_final_text(bool flush);
  void finish(const char* reason);

  std::shared_ptr<Model> owner_;
  ModelSession session_;
  std::vector<int32_t> prompt_;
  SamplingParams params_;
  std::unique_ptr<Sampler> sampler_;
  std::vector<float> logits_;
  std::string pending_bytes_;  // token bytes not yet a complete UTF-8 character
  std::string text_;           // decoded text not yet emitted (held back for stop strings)
  std::string final_text_;     // everything emitted
  GenerationStats stats_;
  std::function<bool()> interrupt_check_;
  std::atomic<bool> cancelled_{false};
  bool prefilled_ = false;
  bool finished_ = false;
};

}  // namespace bitnet::model
