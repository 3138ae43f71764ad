// Tokenizer and detokenizer: libllama's vocabulary of a model file.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "engine/llama_engine.h"

namespace bitnet::model {

class Vocab {
 public:
  explicit Vocab(engine::SharedLlamaModel model);

  int n_tokens() const;
  int32_t bos() const;
  int32_t eos() const;
  int32_t eot() const;
  bool is_end_of_generation(int32_t token) const;

  std::vector<int32_t> tokenize(const std::string& text, bool add_bos, bool special) const;
  // Raw bytes of one token (may be part of a multi-byte UTF-8 character).
  std::string token_bytes(int32_t token, bool special) const;
  std::string detokenize(const std::vector<int32_t>& tokens, bool special) const;
  // The GGUF's default chat template, or "" when it has none.
  std::string chat_template() const;
  // libllama's vocabulary, for its grammar sampler.
  const llama_vocab* raw() const { return vocab_; }
  // Every token's bytes as generated text holds them (token_bytes(t, false)), and whether they
  // are whole UTF-8 characters; made at the first call (thread-safe), for constrained sampling.
  const std::vector<std::string>& pieces() const;
  const std::vector<uint8_t>& whole_characters() const;

 private:
  std::vector<int32_t> tokenize_unguarded(const std::string& text, bool add_bos, bool special) const;

  void make_pieces() const;

  engine::SharedLlamaModel model_;
  const llama_vocab* vocab_;
  mutable std::once_flag pieces_once_;
  mutable std::vector<std::string> pieces_;
  mutable std::vector<uint8_t> whole_;
};

}  // namespace bitnet::model
