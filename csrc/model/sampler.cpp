#include "model/sampler.h"

#include <cmath>
#include <exception>

#include "errors.h"

namespace bitnet::model {

Sampler::Sampler(const SamplingParams& params, const Vocab& vocab, int n_vocab,
                 const std::vector<int32_t>& history)
    : candidates_(static_cast<size_t>(n_vocab)) {
  chain_ = llama_sampler_chain_init(llama_sampler_chain_default_params());
  if (!params.logit_bias.empty()) {
    std::vector<llama_logit_bias> biases;
    for (const auto& [token, bias] : params.logit_bias) {
      if (token < 0 || token >= n_vocab) {
        free_all();
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

  if (!params.grammar.empty()) {
    // libllama's parser reports its errors (to stderr) and returns null; it throws nothing out,
    // but a failure of its own is still refused rather than let through.
    try {
      grammar_ = llama_sampler_init_grammar(vocab.raw(), params.grammar.c_str(), "root");
    } catch (const std::exception&) {
      grammar_ = nullptr;
    }
    if (grammar_ == nullptr) {
      free_all();
      throw InvalidArgument(
          "grammar is not valid GBNF: it must define a 'root' rule, every rule it uses, and no "
          "left-recursive rule (libllama's parser printed where it stopped on stderr)");
    }
    pieces_ = &vocab.pieces();
    whole_ = &vocab.whole_characters();
  }
}

bool Sampler::keeps_utf8(llama_token token) const {
  if (cursor_.at_boundary() && (*whole_)[static_cast<size_t>(token)] != 0) return true;
  const std::string& piece = (*pieces_)[static_cast<size_t>(token)];
  // A token without text (the end of generation) may come only between characters.
  if (piece.empty()) return cursor_.at_boundary();
  return cursor_.accepts(piece);
}

Sampler::~Sampler() { free_all(); }

void Sampler::free_all() {
  if (chain_ != nullptr) llama_sampler_free(chain_);
  if (grammar_ != nullptr) llama_sampler_free(grammar_);
  chain_ = grammar_ = nullptr;
}

void Sampler::fill(const float* logits) {
  for (size_t i = 0; i < candidates_.size(); ++i) {
    candidates_[i] = llama_token_data{static_cast<llama_token>(i), logits[i], 0.0f};
  }
}

int32_t Sampler::sample(const float* logits) {
  fill(logits);
  llama_token_data_array array{candidates_.data(), candidates_.size(), -1, false};
  llama_sampler_apply(chain_, &array);
  if (array.selected < 0 || static_cast<size_t>(array.selected) >= array.size) {
    throw EngineError("the sampler selected no token");
  }
  llama_token token = array.data[array.selected].id;
  if (grammar_ != nullptr) {
    // Checking the one drawn token against the grammar costs one token's match; masking the
    // whole vocabulary costs all of them, so that happens only when the draw does not fit
    // (llama.cpp's common sampler does the same). The draw is then repeated over the tokens
    // that fit, which gives each the probability it has under the masked distribution.
    //
    // libllama's grammar reads a token's bytes as characters leniently: a byte no character
    // starts with (0xF5-0xFF), an overlong form or a surrogate passes for one character of a
    // negated class such as a JSON string's, and becomes U+FFFD in the text (so a maxLength
    // would not hold). Such tokens are masked here, before the grammar looks.
    llama_token_data single{token, 1.0f, 0.0f};
    llama_token_data_array one{&single, 1, -1, false};
    if (keeps_utf8(token)) llama_sampler_apply(grammar_, &one);
    else single.logit = -INFINITY;
    if (std::isinf(single.logit) && single.logit < 0) {
      fill(logits);
      for (llama_token_data& c : candidates_) {
        if (!keeps_utf8(c.id)) c.logit = -INFINITY;
      }
      array = llama_token_data_array{candidates_.data(), candidates_.size(), -1, false};
      llama_sampler_apply(grammar_, &array);
      bool any = false;
      for (size_t i = 0; i < array.size && !any; ++i) any = !(std::isinf(array.data[i].logit) && array.data[i].logit < 0);
      if (!any) {
        throw InvalidArgument("the grammar allows no token after " + std::to_string(n_sampled_) +
                              " generated tokens: no token of this model's vocabulary continues it "
                              "(check the grammar's character classes and literals)");
      }
      llama_sampler_apply(chain_, &array);
      if (array.selected < 0 || static_cast<size_t>(array.selected) >= array.size) {
        throw EngineError("the sampler selected no token");
      }
      token = array.data[array.selected].id;
    }
    try {
      llama_sampler_accept(grammar_, token);
    } catch (const std::exception& e) {
      throw EngineError(std::string("the grammar sampler failed: ") + e.what());
    }
    cursor_.advance((*pieces_)[static_cast<size_t>(token)]);
  }
  llama_sampler_accept(chain_, token);
  ++n_sampled_;
  return token;
}

}  // namespace bitnet::model
