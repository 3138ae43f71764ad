// The engine interface: run tokens through a model and get logits, with a KV cache.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace bitnet::engine {

struct EngineConfig {
  int n_ctx = 4096;
  int n_batch = 512;
  int n_threads = 1;        // generation (one token per decode)
  int n_threads_batch = 1;  // prompt processing (several tokens per decode)
  bool use_mmap = true;
  // Ternary matmuls: "auto" (ours when the CPU has a SIMD path), "bitnet" (ours) or "ggml".
  std::string kernels = "auto";
};

class Engine {
 public:
  virtual ~Engine() = default;

  virtual const char* name() const = 0;
  virtual int n_vocab() const = 0;
  virtual int n_ctx() const = 0;
  virtual int n_batch() const = 0;
  // What runs the ternary matmuls, e.g. "bitnet:avx2" or "ggml".
  virtual std::string kernels() const { return "ggml"; }

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

  // Polled from the decoding thread along with the abort flag (e.g. to notice Ctrl+C);
  // returning true aborts the decode. Set it only while holding the model.
  void set_interrupt_check(std::function<bool()> check) { interrupt_check_ = std::move(check); }

  // Throws InvalidArgument naming the first token id outside [0, n_vocab).
  void check_tokens(const int32_t* tokens, size_t n_tokens) const;

 protected:
  // Throws InvalidArgument unless decode(tokens, n_tokens, pos0) fits an engine holding
  // n_cached positions.
  void check_decode_args(const int32_t* tokens, int n_tokens, int pos0, int n_cached) const;

  // ggml's abort callback (also called between prompt chunks).
  static bool abort_callback(void* engine) {
    auto* self = static_cast<Engine*>(engine);
    if (self->abort_requested()) return true;
    if (self->interrupt_check_ && self->interrupt_check_()) {
      self->request_abort();
      return true;
    }
    return false;
  }

 private:
  std::atomic<bool> abort_{false};
  std::function<bool()> interrupt_check_;
};

// Installs an interrupt check for one scope (the caller holds the model throughout).
class ScopedInterruptCheck {
 public:
  ScopedInterruptCheck(Engine& engine, std::function<bool()> check) : engine_(engine) {
    engine_.set_interrupt_check(std::move(check));
  }
  ~ScopedInterruptCheck() { engine_.set_interrupt_check(nullptr); }
  ScopedInterruptCheck(const ScopedInterruptCheck&) = delete;
  ScopedInterruptCheck& operator=(const ScopedInterruptCheck&) = delete;

 private:
  Engine& engine_;
};

}  // namespace bitnet::engine
