// GGUF metadata as a Python dict (bitnet._core.read_metadata).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cctype>
#include <string>

#include "gguf_file.h"
#include "bindings/common.h"

namespace py = pybind11;

namespace bitnet {

namespace {

py::object scalar(const gguf_context* ctx, int64_t id, gguf_type type) {
  switch (type) {
    case GGUF_TYPE_UINT8: return py::int_(gguf_get_val_u8(ctx, id));
    case GGUF_TYPE_INT8: return py::int_(gguf_get_val_i8(ctx, id));
    case GGUF_TYPE_UINT16: return py::int_(gguf_get_val_u16(ctx, id));
    case GGUF_TYPE_INT16: return py::int_(gguf_get_val_i16(ctx, id));
    case GGUF_TYPE_UINT32: return py::int_(gguf_get_val_u32(ctx, id));
    case GGUF_TYPE_INT32: return py::int_(gguf_get_val_i32(ctx, id));
    case GGUF_TYPE_UINT64: return py::int_(gguf_get_val_u64(ctx, id));
    case GGUF_TYPE_INT64: return py::int_(gguf_get_val_i64(ctx, id));
    case GGUF_TYPE_FLOAT32: return py::float_(gguf_get_val_f32(ctx, id));
    case GGUF_TYPE_FLOAT64: return py::float_(gguf_get_val_f64(ctx, id));
    case GGUF_TYPE_BOOL: return py::bool_(gguf_get_val_bool(ctx, id));
    case GGUF_TYPE_STRING: {
      const char* s = gguf_get_val_str(ctx, id);
      return pyconv::decode_utf8(s, std::char_traits<char>::length(s));
    }
    default: return py::none();
  }
}

template <typename T>
py::list numbers(const void* data, size_t n) {
  const T* values = static_cast<const T*>(data);
  py::list out(n);
  for (size_t i = 0; i < n; ++i) out[i] = py::cast(values[i]);
  return out;
}

py::object array(const gguf_context* ctx, int64_t id) {
  const size_t n = gguf_get_arr_n(ctx, id);
  const gguf_type type = gguf_get_arr_type(ctx, id);
  if (type == GGUF_TYPE_STRING) {
    py::list out(n);
    for (size_t i = 0; i < n; ++i) {
      const char* s = gguf_get_arr_str(ctx, id, i);
      out[i] = pyconv::decode_utf8(s, std::char_traits<char>::length(s));
    }
    return std::move(out);
  }
  const void* data = gguf_get_arr_data(ctx, id);
  switch (type) {
    case GGUF_TYPE_UINT8: return numbers<uint8_t>(data, n);
    case GGUF_TYPE_INT8: return numbers<int8_t>(data, n);
    case GGUF_TYPE_UINT16: return numbers<uint16_t>(data, n);
    case GGUF_TYPE_INT16: return numbers<int16_t>(data, n);
    case GGUF_TYPE_UINT32: return numbers<uint32_t>(data, n);
    case GGUF_TYPE_INT32: return numbers<int32_t>(data, n);
    case GGUF_TYPE_UINT64: return numbers<uint64_t>(data, n);
    case GGUF_TYPE_INT64: return numbers<int64_t>(data, n);
    case GGUF_TYPE_FLOAT32: return numbers<float>(data, n);
    case GGUF_TYPE_FLOAT64: return numbers<double>(data, n);
    case GGUF_TYPE_BOOL: return numbers<bool>(data, n);
    default: return py::list();  // nested arrays: not used by any model key
  }
}

// ggml's own names ("q6_K", "tq2_0"), matched case-insensitively.
ggml_type type_from_name(const std::string& name) {
  auto lower = [](std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
    const char* type_name = ggml_type_name(static_cast<ggml_type>(t));
    if (type_name != nullptr && lower(name) == lower(type_name)) return static_cast<ggml_type>(t);
  }
  throw py::value_error("unknown ggml type '" + name + "'");
}

}  // namespace

void register_gguf(py::module_& m) {
  m.def(
      "quantize_rows",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> rows, const std::string& type_name) {
        if (rows.ndim() != 2) throw py::value_error("quantize_rows needs a 2-D float32 array (rows, columns)");
        const ggml_type type = type_from_name(type_name);
        const int64_t n_rows = rows.shape(0);
        const int64_t n_cols = rows.shape(1);
        const int64_t block = ggml_blck_size(type);
        if (n_cols % block != 0) {
          throw py::value_error("rows of " + std::to_string(n_cols) + " values cannot be split into " +
                                type_name + " blocks of " + std::to_string(block));
        }
        if (ggml_quantize_requires_imatrix(type)) throw py::value_error(type_name + " needs an importance matrix");
        const size_t row_bytes = ggml_row_size(type, n_cols);
        py::array_t<uint8_t> out({static_cast<py::ssize_t>(n_rows), static_cast<py::ssize_t>(row_bytes)});
        const float* src = rows.data();
        uint8_t* dst = out.mutable_data();
        {
          py::gil_scoped_release release;  // both buffers stay alive and untouched by Python
          ggml_quantize_chunk(type, src, dst, 0, n_rows, n_cols, nullptr);
        }
        return out;
      },
      py::arg("rows"), py::arg("type"),
      "Quantize float32 rows to a ggml type (ggml's own quantizer), one row of bytes per row.");

  m.def(
      "read_metadata",
      [](py::handle path_value) {
        const std::string path = pyconv::path_arg(path_value);
        gguf_context_ptr ctx;
        {
          py::gil_scoped_release release;  // file parsing touches no Python object
          ctx = open_gguf(path, nullptr);
        }
        py::dict out;
        const int64_t n = gguf_get_n_kv(ctx.get());
        for (int64_t id = 0; id < n; ++id) {
          const gguf_type type = gguf_get_kv_type(ctx.get(), id);
          const char* key = gguf_get_key(ctx.get(), id);
          out[pyconv::decode_utf8(key, std::char_traits<char>::length(key))] =
              type == GGUF_TYPE_ARRAY ? array(ctx.get(), id) : scalar(ctx.get(), id, type);
        }
        return out;
      },
      py::arg("path"), "Key/value metadata of a GGUF file (arrays as lists); no tensor data is read.");

  m.def(
      "read_tensor_info",
      [](py::handle path_value) {
        const std::string path = pyconv::path_arg(path_value);
        ggml_context* tensors = nullptr;
        gguf_context_ptr ctx;
        {
          py::gil_scoped_release release;  // file parsing touches no Python object
          ctx = open_gguf(path, &tensors);
        }
        ggml_context_ptr tensors_owner(tensors);
        const size_t data_offset = gguf_get_data_offset(ctx.get());
        py::list out;
        for (int64_t i = 0; i < gguf_get_n_tensors(ctx.get()); ++i) {
          const ggml_tensor* t = ggml_get_tensor(tensors, gguf_get_tensor_name(ctx.get(), i));
          py::list shape;
          for (int d = 0; d < ggml_n_dims(t); ++d) shape.append(t->ne[d]);
          py::dict info;
          info["name"] = pyconv::decode_utf8(ggml_get_name(t), std::char_traits<char>::length(ggml_get_name(t)));
          info["type"] = ggml_type_name(t->type);
          info["shape"] = shape;
          info["offset"] = data_offset + gguf_get_tensor_offset(ctx.get(), i);
          info["nbytes"] = ggml_nbytes(t);
          out.append(info);
        }
        return out;
      },
      py::arg("path"),
      "The tensor table of a GGUF file: name, ggml type, shape (ggml order), absolute offset, size.");
}

}  // namespace bitnet
