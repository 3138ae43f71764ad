// Sampling: the parameters of one generation and the llama.cpp sampler chain built from them.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "llama.h"
#include "model/utf8.h"
#include "model/vocab.h"

namespace bitnet::model {

// What one generation does. Python's SamplingOptions (bitnet/options.py) holds each default,
// range and help text; csrc/bindings/register_model.cpp fills this from it, key by key.
struct SamplingParams {
  int max_tokens = 256;
  float temperature = 0.8f;
  float top_p = 0.95f;
  int top_k = 40;
  float min_p = 0.05f;
  float repeat_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int repeat_last_n = 64;
  uint32_t seed = 0;
  std::vector<std::string> stop;
  std::vector<std::pair<int32_t, float>> logit_bias;  // token id -> added to its logit
  std::string grammar;  // GBNF with a `root` rule: every token must continue it ("": none)
  int logprobs = -1;    // -1: none; k >= 0: each token's log-probability and the k most likely
};

// The sampler chain of one generation: logit bias, penalties, then greedy (temperature 0) or
// top-k, top-p, min-p, temperature and a seeded draw; with a grammar, only tokens that continue
// it (libllama's grammar sampler). Not copyable; frees the samplers.
class Sampler {
 public:
  // `history` (the prompt) counts for the penalties. An invalid grammar is InvalidArgument.
  Sampler(const SamplingParams& params, const Vocab& vocab, int n_vocab, const std::vector<int32_t>& history);
  ~Sampler();
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // The next token for `logits` (n_vocab floats); it joins the history. With a grammar, a
  // grammar that no token can continue is InvalidArgument.
  int32_t sample(const float* logits);

 private:
  void fill(const float* logits);
  void free_all();
  // With a grammar: whether the token keeps the text valid UTF-8 (see Utf8Cursor).
  bool keeps_utf8(llama_token token) const;

  llama_sampler* chain_ = nullptr;
  llama_sampler* grammar_ = nullptr;
  int n_sampled_ = 0;
  const std::vector<std::string>* pieces_ = nullptr;  // the vocabulary's, with a grammar
  const std::vector<uint8_t>* whole_ = nullptr;
  Utf8Cursor cursor_;
  std::vector<llama_token_data> candidates_;
};

}  // namespace bitnet::model
