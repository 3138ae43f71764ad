// Argument checks the kernel and benchmark bindings share: array types, layouts, k, threads.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "ggml.h"
#include "kernels/ternary.h"

namespace bitnet::kernel_args {

namespace py = pybind11;

using Bytes = py::array_t<uint8_t, py::array::c_style>;
using Int8 = py::array_t<int8_t, py::array::c_style>;
using Int32 = py::array_t<int32_t, py::array::c_style>;
using Floats = py::array_t<float, py::array::c_style>;

inline const kernels::Impl& by_name(const std::string& name) {
  const kernels::Impl* impl = kernels::impl_by_name(name.c_str());
  if (impl != nullptr) return *impl;
  for (const char* known : {"scalar", "avx2", "avx512vnni", "neon"}) {
    if (name == known) throw py::value_error("this CPU cannot run the '" + name + "' kernel; use kernel='auto'");
  }
  throw py::value_error("kernel must be 'auto', 'scalar', 'avx2', 'avx512vnni' or 'neon', not '" + name + "'");
}

inline kernels::Layout layout_by_name(const std::string& name) {
  if (name == "i2_s") return kernels::Layout::kI2S;
  if (name == "tq2_0") return kernels::Layout::kTQ2;
  throw py::value_error("layout must be 'i2_s' or 'tq2_0', not '" + name + "'");
}

// The kernels read whole blocks of a row: k must be a positive multiple of the block (a
// 128-weight group for I2_S, 256 for TQ2_0), or they would read past each row.
inline void check_k(kernels::Layout layout, int64_t k) {
  const int64_t block = layout == kernels::Layout::kI2S ? kernels::kGroup : kernels::kTq2Block;
  if (k <= 0 || k % block != 0 || k > (int64_t{1} << 30)) {
    throw py::value_error("k=" + std::to_string(k) + " must be a positive multiple of " + std::to_string(block) +
                          " for layout " + (layout == kernels::Layout::kI2S ? "i2_s" : "tq2_0"));
  }
}

// ggml's thread pools abort beyond GGML_MAX_N_THREADS threads; ours are sized alike.
inline void check_threads(int n_threads) {
  if (n_threads < 1 || n_threads > GGML_MAX_N_THREADS) {
    throw py::value_error("n_threads=" + std::to_string(n_threads) + " must be from 1 to " +
                          std::to_string(GGML_MAX_N_THREADS));
  }
}

}  // namespace bitnet::kernel_args
