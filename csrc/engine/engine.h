// The engine interface: run tokens through a model and get logits, with a KV cache.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace bitnet::engine {

struct EngineConfig {
  int n_ctx = 4096;
  int n_batch = 512;
  int n_threads = 1;        // generation (one token per decode)
  int n_threads_batch = 1;  // prompt processing (several tokens per decode)
  bool use_mmap = true;
};

class Engine {
 public:
  virtual ~Engine() = default;

  virtual const char* name() const = 0;
  virtual int n_vocab() const = 0;
  virtual int n_ctx() const = 0;
  virtual int n_batch() const = 0;

  // Runs tokens[i] at position pos0 + i (in chunks of at most n_batch tokens). Cache entries at
  // positions >= pos0 are replaced; pos0 must not exceed the number of cached positions.
  // Writes the logits of the last token (n_vocab floats), or of every token when all_logits
  // (n_tokens * n_vocab floats), to `logits`. Returns false when an abort request stopped it.
  virtual bool decode(const int32_t* tokens, int n_tokens, int pos0, bool all_logits,
                      float* logits) = 0;

  // Forget cached positions >= n_keep (0 clears the cache).
  virtual void trim_cache(int n_keep) = 0;

  virtual void set_threads(int n_threads, int n_threads_batch) = 0;

  // Safe from any thread: stops a running decode at the next graph node.
  void request_abort() { abort_.store(true, std::memory_order_relaxed); }
  void reset_abort() { abort_.store(false, std::memory_order_relaxed); }
  bool abort_requested() const { return abort_.load(std::memory_order_relaxed); }

 protected:
  static bool abort_callback(void* engine) { return static_cast<Engine*>(engine)->abort_requested(); }

 private:
  std::atomic<bool> abort_{false};
};

}  // namespace bitnet::engine
