// What the engine's KV cache holds, token by token, and every change to it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/engine.h"

namespace bitnet::model {

// The one owner of the KV bookkeeping: the engine keeps the key/value tensors and the count of
// valid positions (to refuse a decode that would read beyond them); this class knows which
// tokens they are, so a prompt that starts like the last one only evaluates what is new.
class KvCache {
 public:
  explicit KvCache(engine::Engine& engine) : engine_(engine) {}

  int size() const { return static_cast<int>(tokens_.size()); }
  int capacity() const { return engine_.n_ctx(); }

  // Keeps the longest cached prefix of `prompt`, short of its last token (which is always
  // evaluated again, for its logits), drops the rest; returns how many tokens were kept.
  size_t reuse_prefix(const std::vector<int32_t>& prompt);

  // Decodes tokens[0, n) at the end of the cache, writing the logits of the last one (or of every
  // one, when all_logits) to `logits`. Returns false when an abort stopped it; the cache then
  // holds what it held before.
  bool append(const int32_t* tokens, int n, bool all_logits, float* logits);

  void clear();

 private:
  engine::Engine& engine_;
  std::vector<int32_t> tokens_;  // the token at each cached position
};

}  // namespace bitnet::model
