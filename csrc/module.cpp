// bitnet._core: creates one submodule per area, registers each, and maps the native exception
// types to bitnet's Python ones (once, for every submodule).
#include <pybind11/pybind11.h>

#include "bindings/common.h"
#include "bindings/log_bridge.h"
#include "errors.h"
#include "llama.h"

namespace py = pybind11;

namespace bitnet {
void register_model(py::module_& m);
void register_info(py::module_& m);
void register_gguf(py::module_& m);
void register_kernels(py::module_& m);
void register_bench(py::module_& m);

namespace {

py::object python_error_class(const char* name) { return py::module_::import("bitnet.errors").attr(name); }

void translate_errors(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const ModelLoadError& e) {
    pyconv::set_error(python_error_class("ModelLoadError"), e.what());
  } catch (const InvalidArgument& e) {
    pyconv::set_error(PyExc_ValueError, e.what());
  } catch (const EngineError& e) {
    pyconv::set_error(python_error_class("EngineError"), e.what());
  }
}

}  // namespace
}  // namespace bitnet

PYBIND11_MODULE(_core, m) {
  m.doc() = "Native engine of bitnet (C++17, ggml/llama.cpp), one submodule per area.";
  m.attr("__version__") = BITNET_VERSION;
  bitnet::install_log_bridge();
  llama_backend_init();
  py::register_exception_translator(&bitnet::translate_errors);
  py::module_ info = m.def_submodule("info", "Build information and what the engines run.");
  bitnet::register_info(info);
  py::module_ gguf = m.def_submodule("gguf", "GGUF files through ggml's reader; ggml's quantizers.");
  bitnet::register_gguf(gguf);
  py::module_ kernels = m.def_submodule("kernels", "The ternary kernels, activation quantization, layouts.");
  bitnet::register_kernels(kernels);
  py::module_ model = m.def_submodule("model", "Model, Generator and the sampling parameters.");
  bitnet::register_model(model);
  py::module_ bench = m.def_submodule("bench", "Internal: what benchmarks/ measure against.");
  bitnet::register_bench(bench);
}
