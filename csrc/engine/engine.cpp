#include "engine/engine.h"

#include "errors.h"

namespace bitnet::engine {

void Engine::check_decode_args(const int32_t* tokens, int n_tokens, int pos0, int n_cached) const {
  if (n_tokens <= 0) throw InvalidArgument("decode needs at least one token");
  if (pos0 < 0 || pos0 > n_cached) {
    throw InvalidArgument("decode position " + std::to_string(pos0) + " is past the " + std::to_string(n_cached) +
                          " cached positions");
  }
  if (pos0 + n_tokens > n_ctx()) {
    throw InvalidArgument(std::to_string(pos0 + n_tokens) + " tokens do not fit in the context of " +
                          std::to_string(n_ctx()) + " (n_ctx)");
  }
  check_tokens(tokens, n_tokens);
}

void Engine::check_tokens(const int32_t* tokens, size_t n_tokens) const {
  const int vocab = n_vocab();
  for (size_t i = 0; i < n_tokens; ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      throw InvalidArgument("token id " + std::to_string(tokens[i]) + " is outside the vocabulary [0, " +
                            std::to_string(vocab) + ")");
    }
  }
}

}  // namespace bitnet::engine
