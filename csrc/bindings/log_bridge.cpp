#include "bindings/log_bridge.h"

#include <pybind11/pybind11.h>

#include <string>

#include "ggml.h"
#include "llama.h"
#include "bindings/common.h"

namespace py = pybind11;

namespace bitnet {

namespace {

// Python's logging levels.
int python_level(ggml_log_level level) {
  switch (level) {
    case GGML_LOG_LEVEL_ERROR: return 40;
    case GGML_LOG_LEVEL_WARN: return 30;
    case GGML_LOG_LEVEL_INFO: return 20;
    default: return 10;
  }
}

bool interpreter_alive() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsInitialized() && !Py_IsFinalizing();
#else
  return Py_IsInitialized() && !_Py_IsFinalizing();
#endif
}

// llama.cpp writes a line in pieces (GGML_LOG_LEVEL_CONT continues the previous one), from
// any thread: assemble per thread, emit on newline.
thread_local std::string line_buffer;
thread_local ggml_log_level line_level = GGML_LOG_LEVEL_INFO;

void emit(ggml_log_level level, const std::string& line) {
  if (!interpreter_alive()) return;
  py::gil_scoped_acquire gil;
  try {
    // Leaked on purpose: it must outlive module teardown, when native threads may still log.
    static PyObject* logger =
        py::module_::import("logging").attr("getLogger")("bitnet.native").release().ptr();
    // Lines quote model files, whose strings need not be UTF-8: never lose a line over it.
    py::handle(logger).attr("log")(python_level(level), "%s", pyconv::decode_utf8(line));
  } catch (py::error_already_set& e) {
    e.discard_as_unraisable("bitnet.native log bridge");
  }
}

void on_log(ggml_log_level level, const char* text, void* /*user_data*/) {
  if (level != GGML_LOG_LEVEL_CONT) line_level = level;
  line_buffer += text;
  size_t newline;
  while ((newline = line_buffer.find('\n')) != std::string::npos) {
    std::string line = line_buffer.substr(0, newline);
    line_buffer.erase(0, newline + 1);
    if (!line.empty()) emit(line_level, line);
  }
}

}  // namespace

void install_log_bridge() {
  llama_log_set(&on_log, nullptr);
  ggml_log_set(&on_log, nullptr);
}

}  // namespace bitnet
