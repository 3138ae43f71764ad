// What libllama's vocabulary code asserts on (GGML_ASSERT: an abort() of the whole process)
// instead of reporting, checked before and right after a file is handed to it, so that a
// damaged or hostile model file is a ModelLoadError naming the problem.
#pragma once

#include <string>

#include "gguf.h"
#include "llama.h"

namespace bitnet::model {

// Before libllama reads the file: the token list is an array of strings in which every token
// (an empty one counts as libllama renames it, "[EMPTY_<id>]") is distinct.
void check_vocabulary_metadata(const gguf_context* ctx, const std::string& path);

// After libllama loaded it: a vocabulary to tokenize with, and the BOS/EOS/SEP tokens that its
// tokenizer adds (add_bos_token and friends) exist.
void check_loaded_vocabulary(const llama_model* model, const std::string& path);

}  // namespace bitnet::model
