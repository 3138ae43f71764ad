#include "model/sampler.h"

#include "errors.h"

namespace bitnet::model {

Sampler::Sampler(const SamplingParams& params, int n_vocab, const std::vector<int32_t>& history)
    : candidates_(static_cast<size_t>(n_vocab)) {
  chain_ = llama_sampler_chain_init(llama_sampler_chain_default_params());
  if (!params.logit_bias.empty()) {
    std::vector<llama_logit_bias> biases;
    for (const auto& [token, bias] : params.logit_bias) {
      if (token < 0 || token >= n_vocab) {
        llama_sampler_free(chain_);
        chain_ = nullptr;
        throw InvalidArgument("logit_bias names token id " + std::to_string(token) +
                              ", outside the vocabulary [0, " + std::to_string(n_vocab) + ")");
      }
      biases.push_back({token, bias});
    }
    llama_sampler_chain_add(chain_, llama_sampler_init_logit_bias(n_vocab, static_cast<int32_t>(biases.size()),
                                                                  biases.data()));
  }
  if (params.repeat_penalty != 1.0f || params.presence_penalty != 0.0f || params.frequency_penalty != 0.0f) {
    llama_sampler_chain_add(chain_, llama_sampler_init_penalties(n_vocab, params.repeat_last_n, params.repeat_penalty,
                                                                 params.frequency_penalty, params.presence_penalty));
  }
  if (params.temperature <= 0.0f) {
    llama_sampler_chain_add(chain_, llama_sampler_init_greedy());
  } else {
    if (params.top_k > 0) llama_sampler_chain_add(chain_, llama_sampler_init_top_k(params.top_k));
    if (params.top_p < 1.0f) llama_sampler_chain_add(chain_, llama_sampler_init_top_p(params.top_p, 1));
    if (params.min_p > 0.0f) llama_sampler_chain_add(chain_, llama_sampler_init_min_p(params.min_p, 1));
    llama_sampler_chain_add(chain_, llama_sampler_init_temp(params.temperature));
    llama_sampler_chain_add(chain_, llama_sampler_init_dist(params.seed));
  }
  for (int32_t t : history) llama_sampler_accept(chain_, t);
}

Sampler::~Sampler() {
  if (chain_ != nullptr) llama_sampler_free(chain_);
}

int32_t Sampler::sample(const float* logits) {
  for (size_t i = 0; i < candidates_.size(); ++i) {
    candidates_[i] = llama_token_data{static_cast<llama_token>(i), logits[i], 0.0f};
  }
  llama_token_data_array array{candidates_.data(), candidates_.size(), -1, false};
  llama_sampler_apply(chain_, &array);
  if (array.selected < 0 || static_cast<size_t>(array.selected) >= array.size) {
    throw EngineError("the sampler selected no token");
  }
  const llama_token token = array.data[array.selected].id;
  llama_sampler_accept(chain_, token);
  return token;
}

}  // namespace bitnet::model
