#include "model/vocab.h"

#include <algorithm>
#include <exception>

#include "errors.h"
#include "model/utf8.h"

namespace bitnet::model {

Vocab::Vocab(engine::SharedLlamaModel model) : model_(std::move(model)), vocab_(llama_model_get_vocab(model_.get())) {}

int Vocab::n_tokens() const { return llama_vocab_n_tokens(vocab_); }
int32_t Vocab::bos() const { return llama_vocab_bos(vocab_); }
int32_t Vocab::eos() const { return llama_vocab_eos(vocab_); }
int32_t Vocab::eot() const { return llama_vocab_eot(vocab_); }
bool Vocab::is_end_of_generation(int32_t token) const { return llama_vocab_is_eog(vocab_, token); }

namespace {

// libllama's tokenizer throws C++ exceptions for vocabularies that cannot encode or decode
// something (a byte token a damaged file lacks): the model's fault, said as such.
template <typename F>
auto guarded(const char* what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const InvalidArgument&) {
    throw;
  } catch (const std::exception& e) {
    throw EngineError(std::string("this model's vocabulary cannot ") + what + " (" + e.what() +
                      "); the model file's tokenizer data is incomplete or damaged");
  }
}

}  // namespace

std::vector<int32_t> Vocab::tokenize(const std::string& text, bool add_bos, bool special) const {
  return guarded("tokenize this text", [&] { return tokenize_unguarded(text, add_bos, special); });
}

std::vector<int32_t> Vocab::tokenize_unguarded(const std::string& text, bool add_bos, bool special) const {
  if (text.size() > static_cast<size_t>(INT32_MAX) / 2) throw InvalidArgument("text is too long to tokenize");
  std::vector<int32_t> tokens(text.size() + 2);
  int32_t n = llama_tokenize(vocab_, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                             static_cast<int32_t>(tokens.size()), add_bos, special);
  if (n < 0) {
    tokens.resize(static_cast<size_t>(-n));
    n = llama_tokenize(vocab_, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                       static_cast<int32_t>(tokens.size()), add_bos, special);
  }
  if (n < 0) throw EngineError("tokenization failed");
  tokens.resize(static_cast<size_t>(n));
  return tokens;
}

std::string Vocab::token_bytes(int32_t token, bool special) const {
  if (token < 0 || token >= n_tokens()) {
    throw InvalidArgument("token id " + std::to_string(token) + " is outside the vocabulary [0, " +
                          std::to_string(n_tokens()) + ")");
  }
  return guarded("decode this token", [&] {
    char buf[256];
    int32_t n = llama_token_to_piece(vocab_, token, buf, sizeof(buf), 0, special);
    if (n >= 0) return std::string(buf, static_cast<size_t>(n));
    std::string big(static_cast<size_t>(-n), '\0');
    n = llama_token_to_piece(vocab_, token, big.data(), static_cast<int32_t>(big.size()), 0, special);
    big.resize(static_cast<size_t>(std::max(n, 0)));
    return big;
  });
}

std::string Vocab::detokenize(const std::vector<int32_t>& tokens, bool special) const {
  std::string out;
  for (int32_t t : tokens) out += token_bytes(t, special);
  return out;
}

void Vocab::make_pieces() const {
  const int n = n_tokens();
  pieces_.resize(static_cast<size_t>(n));
  whole_.resize(static_cast<size_t>(n));
  for (int t = 0; t < n; ++t) {
    pieces_[static_cast<size_t>(t)] = token_bytes(t, false);
    whole_[static_cast<size_t>(t)] = is_complete_utf8(pieces_[static_cast<size_t>(t)]) ? 1 : 0;
  }
}

const std::vector<std::string>& Vocab::pieces() const {
  std::call_once(pieces_once_, [this] { make_pieces(); });
  return pieces_;
}

const std::vector<uint8_t>& Vocab::whole_characters() const {
  std::call_once(pieces_once_, [this] { make_pieces(); });
  return whole_;
}

std::string Vocab::chat_template() const {
  const char* tmpl = llama_model_chat_template(model_.get(), nullptr);
  return tmpl != nullptr ? std::string(tmpl) : std::string();
}

}  // namespace bitnet::model
