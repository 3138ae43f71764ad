// Sampling: the parameters of one generation and the llama.cpp sampler chain built from them.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "llama.h"

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
};

// The sampler chain of one generation: repetition penalty, then greedy (temperature 0) or
// top-k, top-p, min-p, temperature and a seeded draw. Not copyable; frees the chain.
class Sampler {
 public:
  // `history` (the prompt) counts for the repetition penalty.
  Sampler(const SamplingParams& params, int n_vocab, const std::vector<int32_t>& history);
  ~Sampler();
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // The next token for `logits` (n_vocab floats); it joins the history.
  int32_t sample(const float* logits);

 private:
  llama_sampler* chain_ = nullptr;
  std::vector<llama_token_data> candidates_;
};

}  // namespace bitnet::model
