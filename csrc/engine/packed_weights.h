// The process-wide arena of ternary weights repacked for our kernels (csrc/kernels).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ggml.h"
#include "kernels/ternary.h"

namespace bitnet::engine {

// The ternary weights our kernels run, repacked once at load from their TQ2_0 blocks into one
// arena: I2_S codes (rows of k/4 bytes back to back, 64-byte aligned, no per-block scales in the
// stream) and one float scale per row. 3% fewer bytes per token than TQ2_0, no load straddles a
// cache line, and the arena (2 MiB aligned) asks for transparent huge pages: a stream over 4 KiB
// pages pays a page walk every 64 lines and the hardware prefetchers stop at each page's end.
struct PackedWeights {
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  struct Matrix {
    kernels::TernaryMatrix matrix{};
    std::vector<float> scales;
  };
  std::unique_ptr<uint8_t[], Free> arena;
  std::map<size_t, Matrix> by_offset;  // a tensor's offset in the file -> its matrix
  const uint8_t* head = nullptr;       // a copy of the Q6_K head, when asked for
};


// The TQ2_0 weights `tensors` (pointing into the file mapped at `file_data`) repacked for our
// kernels, and a copy of `head` unless it is null: from the process-wide cache, keyed by the file's
// identity (device, inode, size, mtime), or made now on n_threads threads. Engines of one process
// on the same unchanged file (Supervisor slots, server --parallel) share one arena. A tensor whose
// rows have several block scales, which our kernels do not take, has no entry.
// `release(p, n)` is called (from the pool's threads) on each source tensor and each part of
// the head as soon as its copy is made,
// so that the file's pages and the arena are not both resident for the whole model at once (the
// load's peak memory would be twice the weights).
using ReleaseFn = std::function<void(const uint8_t*, size_t)>;
std::shared_ptr<const PackedWeights> packed_weights(const std::string& path, const uint8_t* file_data,
                                                    const std::vector<ggml_tensor*>& tensors, const ggml_tensor* head,
                                                    int n_threads, const ReleaseFn& release);

}  // namespace bitnet::engine
