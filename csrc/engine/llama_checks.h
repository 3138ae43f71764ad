// What libllama's model loader and graphs assert on (GGML_ASSERT: an abort() of the whole
// process) instead of reporting, for the hyper-parameters every architecture shares: checked
// before a file is handed to libllama for a full load, so that a damaged file is a
// ModelLoadError. Architecture-specific keys are not covered (see docs/robustness.md).
#pragma once

#include <string>

#include "gguf.h"

namespace bitnet::engine {

void check_llama_hparams(const gguf_context* ctx, const std::string& path);

}  // namespace bitnet::engine
