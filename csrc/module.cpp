// bitnet._core: only creates the module and registers each area.
#include <pybind11/pybind11.h>

#include "llama.h"
#include "log_bridge.h"

namespace py = pybind11;

namespace bitnet {
void register_model(py::module_& m);
void register_info(py::module_& m);
void register_gguf(py::module_& m);
void register_kernels(py::module_& m);
}  // namespace bitnet

PYBIND11_MODULE(_core, m) {
  m.doc() = "Native engine of bitnet (C++17, ggml/llama.cpp).";
  bitnet::install_log_bridge();
  llama_backend_init();
  bitnet::register_info(m);
  bitnet::register_gguf(m);
  bitnet::register_kernels(m);
  bitnet::register_model(m);
}
