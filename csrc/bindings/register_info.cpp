// Build and version information of the native extension.
#include <pybind11/pybind11.h>

#include "engine/bitnet_engine.h"
#include "ggml-backend.h"
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
    info["gpu_offload"] = llama_supports_gpu_offload() ? "yes" : "no";
#if defined(__clang__)
    info["compiler"] = "clang " __clang_version__;
#elif defined(__GNUC__)
    info["compiler"] = "gcc " __VERSION__;
#else
    info["compiler"] = "unknown";
#endif
    return info;
  }, "Versions of the extension and of the llama.cpp/ggml it was built against.");
  m.def("backend_devices", []() {
    // ggml's registry of the linked build: the CPU, plus GPUs where it was built with such a
    // backend (CUDA, ROCm/HIP, Vulkan, ...) and the device is present.
    py::list out;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
      ggml_backend_dev_t dev = ggml_backend_dev_get(i);
      size_t free = 0, total = 0;
      ggml_backend_dev_memory(dev, &free, &total);
      const auto type = ggml_backend_dev_type(dev);
      py::dict d;
      d["name"] = ggml_backend_dev_name(dev);
      d["description"] = ggml_backend_dev_description(dev);
      d["type"] = type == GGML_BACKEND_DEVICE_TYPE_CPU    ? "cpu"
                  : type == GGML_BACKEND_DEVICE_TYPE_GPU  ? "gpu"
                  : type == GGML_BACKEND_DEVICE_TYPE_IGPU ? "igpu"
                                                          : "accel";
      d["memory_total"] = total;
      out.append(d);
    }
    return out;
  }, "The devices of the linked ggml build's backends (name, description, type, memory_total).");
}

}  // namespace bitnet
