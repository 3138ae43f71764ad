// Build and version information of the native extension.
#include <pybind11/pybind11.h>

#include "engine/bitnet_engine.h"
#include "ggml.h"
#include "llama.h"

namespace py = pybind11;

namespace bitnet {

void register_info(py::module_& m) {
  py::list archs;
  for (const char* arch : engine::kBitnetArchitectures) archs.append(arch);
  m.attr("bitnet_architectures") = py::tuple(archs);
  m.def("build_info", []() {
    py::dict info;
    info["version"] = BITNET_VERSION;
    info["llama_cpp"] = BITNET_LLAMA_CPP_PIN;
    info["ggml_version"] = ggml_version();
    info["ggml_commit"] = ggml_commit();
    info["system_info"] = llama_print_system_info();
#if defined(__clang__)
    info["compiler"] = "clang " __clang_version__;
#elif defined(__GNUC__)
    info["compiler"] = "gcc " __VERSION__;
#else
    info["compiler"] = "unknown";
#endif
    return info;
  }, "Versions of the extension and of the llama.cpp/ggml it was built against.");
}

}  // namespace bitnet
