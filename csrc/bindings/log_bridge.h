// Routes llama.cpp/ggml log lines to Python's logging (logger "bitnet.native").
#pragma once

namespace bitnet {

// Installs the callback for both libllama and libggml. Call with the GIL held.
void install_log_bridge();

}  // namespace bitnet
