// One generation as the scheduler runs it: its prompt, sampler chain and text assembly on the
// scheduler's thread, and the mailbox of final text its consumer reads from any other thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "model/sampler.h"
#include "model/vocab.h"

namespace bitnet::model {

// A generated token's log-probability under the model (log-softmax of the logits the sampler
// was given) and the most likely alternatives at its position.
struct TokenLogprob {
  int32_t token = -1;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;  // most likely first
  size_t offset = 0;  // where its bytes start in the generated text (before a stop string cut it)
};

struct GenerationStats {
  std::string finish_reason;  // "stop" | "length" | "abort"
  std::vector<int32_t> tokens;
  int n_prompt = 0;
  int n_prompt_evaluated = 0;  // after reusing a cached prefix
  double prompt_ms = 0.0;      // from its first prompt batch to the prompt's logits
  double generation_ms = 0.0;  // the decode batches it took part in, and its sampling
  int n_generation_decodes = 0;
  double queue_ms = 0.0;       // from submission to its first batch
  std::vector<TokenLogprob> logprobs;  // params.logprobs >= 0: one per token of the text
};

class Sequence {
 public:
  using Clock = std::chrono::steady_clock;

  // all_logits: keep the logits of every prompt token (Model::logits) instead of generating.
  Sequence(std::vector<int32_t> prompt, SamplingParams params, const Vocab& vocab, int n_vocab, int n_ctx,
           bool all_logits = false);

  // ---- any thread

  // Waits up to `timeout` for text or the end; returns the text that became final since the
  // last call (moved out). *ended is true once the sequence has finished and all text is taken.
  std::string wait_text(std::chrono::milliseconds timeout, bool* ended);
  // Waits up to `timeout` for the end; true when finished.
  bool wait_finished(std::chrono::milliseconds timeout);
  bool finished() const;
  // Ends it at the scheduler's next look (a batch holding only cancelled sequences is aborted).
  void cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }
  // Copies, consistent once finished().
  GenerationStats stats() const;
  std::string text() const;
  // Rethrows what stopped the scheduler from running it, if anything did.
  void rethrow_error() const;
  // The prompt's logits (all_logits), moved out once finished.
  std::vector<float> take_logits();
  // params.logprobs >= 0: the entries of the tokens whose text was handed out since the last
  // call (a token cut off by a stop string has none).
  std::vector<TokenLogprob> take_logprobs();

  // ---- the scheduler's thread

  const std::vector<int32_t>& prompt() const { return prompt_; }
  bool done() const { return done_; }  // the scheduler's view of finished()
  bool all_logits() const { return all_logits_; }
  bool prefilling() const { return n_past < static_cast<int>(prompt_.size()); }
  // The logits of the token it decoded last (the prompt's last, or the pending token): samples
  // the next token, assembles text, and decides whether it continues (pending_token set) or
  // finishes. Throws only what the sampler throws.
  void on_logits(const float* logits);
  // Row `index` of the prompt's logits (all_logits).
  void store_prompt_logits(int index, const float* logits);
  void finish(const char* reason);
  void fail(std::exception_ptr error);

  int slot = -1;               // its KV cache sequence while admitted
  int n_past = 0;              // positions cached for it
  int32_t pending_token = -1;  // sampled, decoded at the next batch
  Clock::time_point submitted;
  Clock::time_point prompt_started;
  bool started = false;
  double generation_ms = 0.0;  // its decode batches and its sampling
  int n_generation_decodes = 0;
  int n_prompt_evaluated = 0;

 private:
  // Moves newly final text into the mailbox; a stop string ends the sequence.
  void take_final_text(bool flush);
  // `cut`: a stop string ended the text; entries of tokens past its end are dropped.
  void publish(std::string piece, const char* finish_reason, bool cut = false);
  void record_logprobs(const float* logits, int32_t token);

  const std::vector<int32_t> prompt_;
  const SamplingParams params_;
  const Vocab& vocab_;
  const int n_vocab_;
  const int n_ctx_;
  const bool all_logits_;
  std::unique_ptr<Sampler> sampler_;
  std::vector<float> prompt_logits_;
  std::vector<int32_t> tokens_;
  std::vector<TokenLogprob> logprobs_;  // one per token of tokens_ (params.logprobs >= 0)
  size_t generated_bytes_ = 0;          // bytes of tokens_ so far
  size_t logprobs_published_ = 0;       // entries of logprobs_ handed to the mailbox
  std::string pending_bytes_;  // token bytes not yet a complete UTF-8 character
  std::string held_;           // decoded text held back (it could start a stop string)
  bool done_ = false;          // the scheduler's view
  double prompt_ms_ = 0.0;
  bool prompt_timed_ = false;
  std::atomic<bool> cancelled_{false};

  // The mailbox, shared with the consumer.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string ready_;       // final text not yet taken
  std::vector<TokenLogprob> ready_logprobs_;  // entries of that text
  std::string final_text_;  // all final text
  bool finished_ = false;
  GenerationStats stats_;   // filled when it finishes
  std::exception_ptr error_;
};

}  // namespace bitnet::model
