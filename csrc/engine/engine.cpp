#include "engine/engine.h"

#include <algorithm>

#include "errors.h"

namespace bitnet::engine {

void Engine::check_seq(int seq) const {
  if (seq < 0 || seq >= n_seq()) {
    throw InvalidArgument("sequence " + std::to_string(seq) + " is outside [0, " + std::to_string(n_seq()) + ") (n_seq)");
  }
}

void Engine::check_batch(const BatchToken* batch, int n_tokens) const {
  if (n_tokens <= 0) throw InvalidArgument("decode needs at least one token");
  if (n_tokens > n_batch()) {
    throw InvalidArgument("a batch of " + std::to_string(n_tokens) + " tokens exceeds n_batch (" +
                          std::to_string(n_batch()) + ")");
  }
  std::vector<bool> seen(n_cached_.size(), false);
  const int vocab = n_vocab();
  for (int i = 0; i < n_tokens; ++i) {
    const BatchToken& t = batch[i];
    check_seq(t.seq);
    if (t.token < 0 || t.token >= vocab) {
      throw InvalidArgument("token id " + std::to_string(t.token) + " is outside the vocabulary [0, " +
                            std::to_string(vocab) + ")");
    }
    const bool continues = i > 0 && batch[i - 1].seq == t.seq;
    if (continues) {
      if (t.pos != batch[i - 1].pos + 1) throw InvalidArgument("a sequence's positions in a batch must be consecutive");
    } else {
      if (seen[t.seq]) throw InvalidArgument("a sequence's tokens must be consecutive in a batch");
      seen[t.seq] = true;
      const int cached = n_cached_[t.seq];
      if (t.pos < 0 || t.pos > cached) {
        throw InvalidArgument("decode position " + std::to_string(t.pos) + " is past the " + std::to_string(cached) +
                              " cached positions of sequence " + std::to_string(t.seq));
      }
    }
    if (t.pos >= n_ctx()) {
      throw InvalidArgument(std::to_string(t.pos + 1) + " tokens do not fit in the context of " +
                            std::to_string(n_ctx()) + " (n_ctx)");
    }
  }
}

bool Engine::decode_batch(const BatchToken* batch, int n_tokens, float* logits) {
  check_batch(batch, n_tokens);
  // What a sequence held from its first position in the batch on is replaced (or, on abort,
  // partly overwritten): it is no longer cached either way until the batch succeeds.
  for (int i = 0; i < n_tokens; ++i) {
    if (i == 0 || batch[i - 1].seq != batch[i].seq) n_cached_[batch[i].seq] = batch[i].pos;
  }
  if (!run_batch(batch, n_tokens, logits)) return false;
  for (int i = 0; i < n_tokens; ++i) n_cached_[batch[i].seq] = batch[i].pos + 1;
  return true;
}

void Engine::trim_cache(int seq, int n_keep) {
  check_seq(seq);
  if (n_keep < 0) throw InvalidArgument("n_keep must be >= 0");
  if (n_keep >= n_cached_[seq]) return;
  drop_positions(seq, n_keep);
  n_cached_[seq] = n_keep;
}

void Engine::copy_cache(int src, int dst, int n) {
  check_seq(src);
  check_seq(dst);
  if (n < 0 || n > n_cached_[src]) {
    throw InvalidArgument("cannot copy " + std::to_string(n) + " positions of a sequence holding " +
                          std::to_string(n_cached_[src]));
  }
  if (src == dst) {
    trim_cache(dst, n);
    return;
  }
  drop_positions(dst, 0);
  n_cached_[dst] = 0;
  if (n == 0) return;
  copy_positions(src, dst, n);
  n_cached_[dst] = n;
}

}  // namespace bitnet::engine
