// Continuous batching: the one thread that runs a model's engine for every sequence at once.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "engine/engine.h"
#include "model/sequence.h"

namespace bitnet::model {

// What the scheduler has done, for stats and tests.
struct SchedulerStats {
  int64_t batches = 0;
  int64_t batch_tokens = 0;      // tokens evaluated, prompts and generated
  int64_t aborted_batches = 0;   // stopped for a cancellation or to let a new request in
  int64_t reused_tokens = 0;     // prompt tokens found in a sequence's cache
  int64_t copied_tokens = 0;     // of those, copied from another sequence's cache
  int max_active = 0;            // most sequences in one batch
  int active = 0;                // admitted now
  int queued = 0;                // waiting for a free sequence slot
};

// Admits submitted sequences into the engine's n_seq KV cache slots and runs batches: each
// batch holds the next token of every generating sequence and a chunk of each prompt being
// read (small chunks while others are running, so their tokens keep flowing). A sequence whose
// prompt starts like what a slot holds reuses those cache entries, copied from a running
// sequence's slot when that one matches more. Never touches Python.
class Scheduler {
 public:
  Scheduler(engine::Engine& engine, const Vocab& vocab);
  ~Scheduler();  // finishes what is left with "abort" and joins the thread
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  void submit(std::shared_ptr<Sequence> seq);
  // Ends a sequence: at once when it is still queued, else at the scheduler's next look.
  void cancel(const std::shared_ptr<Sequence>& seq);
  // Cancels every sequence and stops the running batch.
  void cancel_all();
  // Runs f on the engine between batches.
  template <typename F>
  void with_engine(F&& f) {
    std::lock_guard<std::mutex> lock(engine_mu_);
    f(engine_);
  }
  SchedulerStats stats() const;

  // Prompt tokens a batch takes from one sequence while other sequences are active: the bound
  // on how long a running stream waits for its next token because of someone's long prompt.
  static constexpr int kSharedPrefillChunk = 16;
  // A prompt this short (or its rest) is read in one batch even while others run: a request's
  // time to first token stays near its idle value, at the cost of one longer step for the
  // running streams (2B-4T on 2 cores: ~0.3 s instead of ~0.1 s). Several such prompts share a
  // batch up to kSharedPrefillBudget tokens.
  static constexpr int kShortPrompt = 32;
  static constexpr int kSharedPrefillBudget = 64;

 private:
  struct Slot {
    std::vector<int32_t> tokens;  // what its cache entries hold, position by position
    bool busy = false;
    uint64_t last_used = 0;
  };
  struct Part {  // one sequence's share of a batch
    Sequence* seq;
    int first;  // index in the batch
    int count;
  };

  void loop();
  // Gives seq a free slot (nullptr-safe: false when none is free), reusing the longest cached
  // prefix of its prompt.
  bool admit(Sequence& seq);
  void release(Sequence& seq);
  void run_step();
  bool interrupt_batch() const;

  engine::Engine& engine_;
  const Vocab& vocab_;

  mutable std::mutex mu_;  // queue_, stop_, stats_
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Sequence>> queue_;
  bool stop_ = false;
  SchedulerStats stats_;
  std::thread thread_;

  std::mutex engine_mu_;  // held while a batch runs
  std::atomic<bool> arrivals_{false};  // a request that a free slot can take is waiting
  std::atomic<int> free_slots_{0};
  std::vector<std::shared_ptr<Sequence>> admitted_;  // under mu_, for cancel_all

  // The scheduler thread's own.
  std::vector<std::shared_ptr<Sequence>> active_;
  std::vector<Slot> slots_;
  uint64_t clock_ = 0;
  std::vector<engine::BatchToken> batch_;
  std::vector<Part> parts_;
  std::vector<Sequence*> whole_;
  std::vector<std::pair<Sequence*, const float*>> sampling_;  // who samples after the batch  // short prompts read whole in the batch being built
  std::vector<float> logits_;
  int batch_prefill_tokens_ = 0;
};

}  // namespace bitnet::model
