// The engine interface: run tokens through a model and get logits, with a KV cache.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace bitnet::engine {

struct EngineConfig {
  int n_ctx = 4096;
  int n_batch = 512;
  int n_seq = 1;            // sequences the KV cache holds, each with up to n_ctx positions
  int n_threads = 1;        // generation (one token per decode)
  int n_threads_batch = 1;  // prompt processing (several tokens per decode)
  bool use_mmap = true;
  // libllama engine: layers offloaded to a GPU backend, when the linked llama.cpp has one
  // (llama_supports_gpu_offload); BitNetEngine runs every layer on the CPU.
  int n_gpu_layers = 0;
  // Ternary matmuls: "auto" (ours when the CPU has a SIMD path), "bitnet" (ours) or "ggml".
  std::string kernels = "auto";
};

// One token of a batch: `token` at position `pos` of sequence `seq` (a KV cache slot in
// [0, n_seq)); `logits` asks for its logits.
struct BatchToken {
  int32_t token = 0;
  int32_t pos = 0;
  int32_t seq = 0;
  bool logits = false;
};

// The engines share this bookkeeping and its checks: what each sequence holds (its number of
// cached positions) and what a batch may ask. Implementations run validated batches.
class Engine {
 public:
  explicit Engine(int n_seq = 1) : n_cached_(static_cast<size_t>(n_seq), 0) {}
  virtual ~Engine() = default;

  virtual const char* name() const = 0;
  virtual int n_vocab() const = 0;
  virtual int n_ctx() const = 0;
  virtual int n_batch() const = 0;
  virtual int n_threads() const = 0;  // generation threads
  // What runs the ternary matmuls, e.g. "bitnet:avx2" or "ggml".
  virtual std::string kernels() const { return "ggml"; }

  int n_seq() const { return static_cast<int>(n_cached_.size()); }
  // Positions cached for sequence `seq`.
  int n_cached(int seq) const { return n_cached_.at(static_cast<size_t>(seq)); }

  // Runs one batch of at most n_batch tokens, every sequence's tokens in one evaluation of the
  // weights. A sequence's tokens are consecutive in the batch, at consecutive positions that
  // start at or below its cached positions (entries from there on are replaced) and stay below
  // n_ctx. Writes the logits of the tokens marked `logits`, in batch order, n_vocab floats each.
  // Returns false when an abort request stopped it: each sequence then keeps the positions it
  // held below its first one in the batch. Throws InvalidArgument for a batch breaking these rules.
  bool decode_batch(const BatchToken* batch, int n_tokens, float* logits);

  // Forget the positions >= n_keep of sequence `seq` (0 clears it).
  void trim_cache(int seq, int n_keep);
  // Makes sequence `dst` hold the first n cached positions of `src` (a shared prompt prefix)
  // and nothing else.
  void copy_cache(int src, int dst, int n);

  virtual void set_threads(int n_threads, int n_threads_batch) = 0;

  // Safe from any thread: stops a running decode at the next graph node.
  void request_abort() { abort_.store(true, std::memory_order_relaxed); }
  void reset_abort() { abort_.store(false, std::memory_order_relaxed); }
  bool abort_requested() const { return abort_.load(std::memory_order_relaxed); }

  // Polled from the decoding thread along with the abort flag (the scheduler's: a batch of
  // only cancelled sequences, or a long prompt chunk in a newcomer's way); returning true
  // aborts the decode. Set it only while no decode runs.
  void set_interrupt_check(std::function<bool()> check) { interrupt_check_ = std::move(check); }

 protected:
  // A checked batch (see decode_batch); false when aborted.
  virtual bool run_batch(const BatchToken* batch, int n_tokens, float* logits) = 0;
  // Drop positions >= n_keep of `seq`; copy positions [0, n) of `src` to `dst` (src != dst).
  virtual void drop_positions(int seq, int n_keep) = 0;
  virtual void copy_positions(int src, int dst, int n) = 0;

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
  void check_batch(const BatchToken* batch, int n_tokens) const;
  void check_seq(int seq) const;

  std::vector<int> n_cached_;  // per sequence
  std::atomic<bool> abort_{false};
  std::function<bool()> interrupt_check_;
};

}  // namespace bitnet::engine
