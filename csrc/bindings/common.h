// Conversions between Python values and C++ values for the bindings. Every argument a caller
// passes is type- and range-checked here, before any native code sees it: a wrong type raises
// TypeError, an integer beyond 64 bits OverflowError, a value out of range or text that is not
// valid Unicode ValueError, each naming the argument.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

namespace bitnet::pyconv {

namespace py = pybind11;

// An int (or an object with __index__, such as numpy integers; not bool) in [lo, hi].
int64_t int_arg(py::handle value, const char* name, int64_t lo, int64_t hi);

// A finite float (or int) in [lo, hi].
double float_arg(py::handle value, const char* name, double lo, double hi);

// A bool (or numpy bool).
bool bool_arg(py::handle value, const char* name);

// The UTF-8 bytes of a str. Lone surrogates (from JSON "\ud800" escapes, or from undecodable
// bytes that Python read with surrogateescape) are not text: ValueError with their position.
std::string utf8_arg(py::handle value, const char* name);

// A file name as the bytes the OS takes: str is encoded like os.fsencode (bytes that Python read
// with surrogateescape come back as they were), bytes are taken as they are; no NUL byte.
std::string path_arg(py::handle value);

// A list or tuple of str, each as utf8_arg.
std::vector<std::string> utf8_list_arg(py::handle value, const char* name);

// A sequence of token ids (ints in int32 range; the vocabulary range is checked by the model).
std::vector<int32_t> token_list_arg(py::handle value, const char* name);

// Python text of bytes meant to be UTF-8 (names and messages from model files); invalid bytes
// become U+FFFD instead of failing the whole call.
py::str decode_utf8(const char* data, size_t size);
inline py::str decode_utf8(const std::string& s) { return decode_utf8(s.data(), s.size()); }

// Sets a Python exception of class `type` whose message is `message` (UTF-8, invalid bytes
// replaced: a message that quotes a damaged file must still reach the caller).
void set_error(py::handle type, const char* message);

}  // namespace bitnet::pyconv
