// A generation as its caller sees it: a handle on a Sequence that the model's scheduler runs.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/sequence.h"

namespace bitnet::model {

class Model;

// Submitted when constructed: the sequence runs on the model's scheduler thread (with every
// other running sequence of the model) while this handle hands its text out. Dropping the
// handle cancels the generation.
class Generator {
 public:
  Generator(std::shared_ptr<Model> model, std::shared_ptr<Sequence> seq);
  ~Generator();
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;

  // Waits for text that became final (or for the end) and returns it; "" once done(). Rethrows
  // what stopped the scheduler from running the sequence.
  std::string step();
  // Finished, and every piece of text handed out.
  bool done() const { return ended_; }
  GenerationStats stats() const { return seq_->stats(); }
  std::string text() const { return seq_->text(); }
  // SamplingParams::logprobs >= 0: the entries of the tokens whose text step() handed out
  // since the last call.
  std::vector<TokenLogprob> take_logprobs() { return seq_->take_logprobs(); }
  const Vocab& vocab() const;

  // Steps to the end. `on_text` gets each non-empty piece and returns true to stop early.
  void run(const std::function<bool(const std::string&)>& on_text);

  // Ends the generation (finish_reason "abort" when it was still running) and waits until the
  // scheduler has let it go: at most one batch.
  void finish_early();

  // Safe from any thread, also before the first step: the generation ends with finish_reason
  // "abort" at the scheduler's next look (a batch of only cancelled sequences stops at once).
  void cancel();

  // Polled every 50 ms while step() waits (e.g. to notice Ctrl+C); true cancels.
  void set_interrupt_check(std::function<bool()> check) { interrupt_check_ = std::move(check); }

 private:
  std::shared_ptr<Model> model_;
  std::shared_ptr<Sequence> seq_;
  std::function<bool()> interrupt_check_;
  bool ended_ = false;
};

}  // namespace bitnet::model
