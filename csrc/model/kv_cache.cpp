#include "model/kv_cache.h"

#include <algorithm>

namespace bitnet::model {

size_t KvCache::reuse_prefix(const std::vector<int32_t>& prompt) {
  size_t keep = 0;
  const size_t limit = std::min(tokens_.size(), prompt.empty() ? 0 : prompt.size() - 1);
  while (keep < limit && tokens_[keep] == prompt[keep]) ++keep;
  engine_.trim_cache(static_cast<int>(keep));
  tokens_.resize(keep);
  return keep;
}

bool KvCache::append(const int32_t* tokens, int n, bool all_logits, float* logits) {
  // An aborted decode may have written some positions; trimming to size() forgets them.
  if (!engine_.decode(tokens, n, size(), all_logits, logits)) {
    engine_.trim_cache(size());
    return false;
  }
  tokens_.insert(tokens_.end(), tokens, tokens + n);
  return true;
}

void KvCache::clear() {
  tokens_.clear();
  engine_.trim_cache(0);
}

}  // namespace bitnet::model
