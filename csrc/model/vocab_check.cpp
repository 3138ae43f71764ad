#include "model/vocab_check.h"

#include <algorithm>
#include <deque>
#include <cstdio>
#include <string_view>
#include <utility>
#include <vector>

#include "errors.h"

namespace bitnet::model {

namespace {

constexpr char kTokens[] = "tokenizer.ggml.tokens";
constexpr char kTokenTypes[] = "tokenizer.ggml.token_type";
constexpr char kTokenizerModel[] = "tokenizer.ggml.model";
constexpr int32_t kByteTokenType = 6;  // LLAMA_TOKEN_TYPE_BYTE
// libllama keeps token lengths in ints and aborts on a piece of 2 GiB; no real token is
// longer than a few hundred bytes.
constexpr size_t kMaxTokenBytes = size_t{1} << 20;

// A token's text as a message can show it: at most 40 bytes, control bytes escaped.
std::string shown(std::string_view text) {
  std::string out;
  for (unsigned char c : text.substr(0, 40)) {
    if (c < 0x20 || c == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  return text.size() > 40 ? out + "..." : out;
}

}  // namespace

void check_vocabulary_metadata(const gguf_context* ctx, const std::string& path) {
  const int64_t id = gguf_find_key(ctx, kTokens);
  if (id < 0) return;  // libllama reports a missing vocabulary itself
  if (gguf_get_kv_type(ctx, id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(ctx, id) != GGUF_TYPE_STRING) {
    throw ModelLoadError("'" + path + "' has a damaged vocabulary: '" + kTokens +
                         "' is not an array of strings (re-convert the model)");
  }
  const size_t n = gguf_get_arr_n(ctx, id);
  // Views of the strings the gguf context holds, sorted: equal tokens end up side by side
  // (no copies and no hash table: Llama 3 vocabularies have 128k tokens, checked at every load).
  std::vector<std::pair<std::string_view, size_t>> tokens;
  std::deque<std::string> renamed;  // storage for the names libllama gives empty tokens
  tokens.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    std::string_view text = gguf_get_arr_str(ctx, id, i);
    if (text.size() > kMaxTokenBytes) {
      throw ModelLoadError("'" + path + "' has a damaged vocabulary: token " + std::to_string(i) + " is " +
                           std::to_string(text.size()) + " bytes long");
    }
    if (text.empty()) text = renamed.emplace_back("[EMPTY_" + std::to_string(i) + "]");  // as libllama does
    tokens.emplace_back(text, i);
  }
  std::sort(tokens.begin(), tokens.end());
  for (size_t j = 1; j < tokens.size(); ++j) {
    if (tokens[j].first == tokens[j - 1].first) {
      throw ModelLoadError("'" + path + "' has a damaged vocabulary: tokens " + std::to_string(tokens[j - 1].second) +
                           " and " + std::to_string(tokens[j].second) + " are both '" + shown(tokens[j].first) +
                           "', and every token must be distinct (re-convert or re-download the model)");
    }
  }
  // A WordPiece (BERT) vocabulary has no byte tokens: libllama aborts when it meets one.
  const int64_t model_id = gguf_find_key(ctx, kTokenizerModel);
  const int64_t types_id = gguf_find_key(ctx, kTokenTypes);
  if (model_id >= 0 && types_id >= 0 && gguf_get_kv_type(ctx, model_id) == GGUF_TYPE_STRING &&
      std::string(gguf_get_val_str(ctx, model_id)) == "bert" && gguf_get_kv_type(ctx, types_id) == GGUF_TYPE_ARRAY &&
      gguf_get_arr_type(ctx, types_id) == GGUF_TYPE_INT32) {
    const auto* types = static_cast<const int32_t*>(gguf_get_arr_data(ctx, types_id));
    const size_t n_types = std::min(n, gguf_get_arr_n(ctx, types_id));
    for (size_t i = 0; i < n_types; ++i) {
      if (types[i] == kByteTokenType) {
        throw ModelLoadError("'" + path + "' has a damaged vocabulary: token " + std::to_string(i) +
                             " is a byte token, which a WordPiece ('bert') tokenizer cannot have");
      }
    }
  }
}

void check_loaded_vocabulary(const llama_model* model, const std::string& path) {
  const llama_vocab* vocab = llama_model_get_vocab(model);
  if (llama_vocab_type(vocab) == LLAMA_VOCAB_TYPE_NONE || llama_vocab_n_tokens(vocab) < 1) {
    throw ModelLoadError("'" + path + "' has no vocabulary (tokenizer.ggml.model is 'none' or no tokens); bitnet "
                         "needs the model's tokenizer to read prompts and write text");
  }
  struct Needed {
    bool added;
    llama_token token;
    const char* what;
  };
  for (const Needed& n : {Needed{llama_vocab_get_add_bos(vocab), llama_vocab_bos(vocab), "BOS"},
                          Needed{llama_vocab_get_add_eos(vocab), llama_vocab_eos(vocab), "EOS"},
                          Needed{llama_vocab_get_add_sep(vocab), llama_vocab_sep(vocab), "SEP"}}) {
    if (n.added && n.token == LLAMA_TOKEN_NULL) {
      throw ModelLoadError("'" + path + "' has a damaged vocabulary: its tokenizer adds a " + n.what +
                           " token to every prompt but the file names none inside the vocabulary");
    }
  }
}

}  // namespace bitnet::model
