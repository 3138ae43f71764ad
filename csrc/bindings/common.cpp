#include "bindings/common.h"

#include <cmath>
#include <cstdio>
#include <sstream>

namespace bitnet::pyconv {

namespace {

std::string type_name(py::handle value) { return Py_TYPE(value.ptr())->tp_name; }

[[noreturn]] void type_error(const char* name, const char* expected, py::handle value) {
  throw py::type_error(std::string(name) + " must be " + expected + ", not " + type_name(value));
}

std::string format_number(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

}  // namespace

int64_t int_arg(py::handle value, const char* name, int64_t lo, int64_t hi) {
  if (PyBool_Check(value.ptr()) || !PyIndex_Check(value.ptr())) type_error(name, "an integer", value);
  py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(value.ptr()));
  if (!index) throw py::error_already_set();
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
  if (v == -1 && PyErr_Occurred() != nullptr) throw py::error_already_set();
  if (overflow != 0) {
    PyErr_Format(PyExc_OverflowError, "%s=%R is out of range (allowed: %lld to %lld)", name, index.ptr(),
                 static_cast<long long>(lo), static_cast<long long>(hi));
    throw py::error_already_set();
  }
  if (v < lo || v > hi) {
    throw py::value_error(std::string(name) + "=" + std::to_string(v) + " is out of range (allowed: " +
                          std::to_string(lo) + " to " + std::to_string(hi) + ")");
  }
  return v;
}

double float_arg(py::handle value, const char* name, double lo, double hi) {
  if (PyBool_Check(value.ptr()) || PyUnicode_Check(value.ptr()) || PyBytes_Check(value.ptr()) ||
      !(PyFloat_Check(value.ptr()) || PyIndex_Check(value.ptr()) || PyObject_HasAttrString(value.ptr(), "__float__"))) {
    type_error(name, "a number", value);
  }
  const double v = PyFloat_AsDouble(value.ptr());
  if (v == -1.0 && PyErr_Occurred() != nullptr) throw py::error_already_set();
  if (!std::isfinite(v) || v < lo || v > hi) {
    throw py::value_error(std::string(name) + "=" + format_number(v) + " is out of range (allowed: " +
                          format_number(lo) + " to " + format_number(hi) + ")");
  }
  return v;
}

bool bool_arg(py::handle value, const char* name) {
  if (PyBool_Check(value.ptr())) return value.ptr() == Py_True;
  // numpy.bool_ is not a bool subclass; accept what says it is one.
  if (py::hasattr(value, "dtype") && py::str(value.attr("dtype").attr("kind")).cast<std::string>() == "b") {
    return PyObject_IsTrue(value.ptr()) == 1;
  }
  type_error(name, "a bool", value);
}

std::string utf8_arg(py::handle value, const char* name) {
  if (!PyUnicode_Check(value.ptr())) type_error(name, "a str", value);
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(value.ptr(), &size);
  if (data != nullptr) return std::string(data, static_cast<size_t>(size));
  PyErr_Clear();
  // Only a lone surrogate (U+D800..U+DFFF) makes a str unencodable; say where the first one is.
  const Py_ssize_t n = PyUnicode_GetLength(value.ptr());
  for (Py_ssize_t i = 0; i < n; ++i) {
    const Py_UCS4 c = PyUnicode_ReadChar(value.ptr(), i);
    if (c >= 0xD800 && c <= 0xDFFF) {
      char where[64];
      std::snprintf(where, sizeof where, "U+%04X at index %zd", static_cast<unsigned>(c), i);
      std::string message = std::string(name) + " is not valid Unicode: it has a lone surrogate " + where;
      if (c >= 0xDC80 && c <= 0xDCFF) {  // how surrogateescape spells a byte that was not UTF-8
        char byte[80];
        std::snprintf(byte, sizeof byte, " (the byte 0x%02X of input that was not UTF-8)", static_cast<unsigned>(c - 0xDC00));
        message += byte;
      }
      throw py::value_error(message + "; pass UTF-8 text");
    }
  }
  throw py::value_error(std::string(name) + " cannot be encoded as UTF-8");
}

std::string path_arg(py::handle value) {
  std::string path;
  if (PyBytes_Check(value.ptr())) {
    path = value.cast<std::string>();
  } else if (PyUnicode_Check(value.ptr())) {
    py::object encoded = py::reinterpret_steal<py::object>(PyUnicode_EncodeFSDefault(value.ptr()));
    if (!encoded) throw py::error_already_set();
    path = encoded.cast<std::string>();
  } else {
    type_error("path", "str or bytes", value);
  }
  if (path.empty()) throw py::value_error("path is empty");
  if (path.find('\0') != std::string::npos) throw py::value_error("path contains a NUL byte");
  return path;
}

std::vector<std::string> utf8_list_arg(py::handle value, const char* name) {
  if (!PyList_Check(value.ptr()) && !PyTuple_Check(value.ptr())) type_error(name, "a list of str", value);
  std::vector<std::string> out;
  py::sequence seq = py::reinterpret_borrow<py::sequence>(value);
  for (py::ssize_t i = 0; i < static_cast<py::ssize_t>(seq.size()); ++i) {
    const std::string item_name = std::string(name) + "[" + std::to_string(i) + "]";
    out.push_back(utf8_arg(seq[i], item_name.c_str()));
  }
  return out;
}

std::vector<int32_t> token_list_arg(py::handle value, const char* name) {
  if (PyUnicode_Check(value.ptr()) || PyBytes_Check(value.ptr()) || !PySequence_Check(value.ptr())) {
    type_error(name, "a sequence of token ids", value);
  }
  py::sequence seq = py::reinterpret_borrow<py::sequence>(value);
  std::vector<int32_t> out;
  out.reserve(seq.size());
  for (py::ssize_t i = 0; i < static_cast<py::ssize_t>(seq.size()); ++i) {
    const std::string item_name = std::string(name) + "[" + std::to_string(i) + "]";
    out.push_back(static_cast<int32_t>(int_arg(seq[i], item_name.c_str(), INT32_MIN, INT32_MAX)));
  }
  return out;
}

py::str decode_utf8(const char* data, size_t size) {
  PyObject* s = PyUnicode_DecodeUTF8(data, static_cast<Py_ssize_t>(size), "replace");
  if (s == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(s);
}

void set_error(py::handle type, const char* message) {
  PyObject* text = PyUnicode_DecodeUTF8(message, static_cast<Py_ssize_t>(std::char_traits<char>::length(message)),
                                        "replace");
  if (text == nullptr) return;  // the decoding error stays set and is raised instead
  PyErr_SetObject(type.ptr(), text);
  Py_DECREF(text);
}

}  // namespace bitnet::pyconv
