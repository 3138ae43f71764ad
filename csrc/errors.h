// C++ exception types that register_model.cpp maps to bitnet's Python exception classes.
#pragma once

#include <stdexcept>
#include <string>

namespace bitnet {

// A model file that is missing, unreadable, truncated, not GGUF, or of an unsupported kind.
// Maps to bitnet.ModelLoadError (an OSError).
class ModelLoadError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A bad argument (maps to ValueError).
class InvalidArgument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// A native computation that failed for a reason other than the caller's input (RuntimeError).
class EngineError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace bitnet
