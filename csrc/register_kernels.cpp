// bitnet._core kernels: ternary x int8 GEMV/GEMM on I2_S-layout weights.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "kernels/ternary.h"

namespace py = pybind11;

namespace bitnet {

namespace {

using Packed = py::array_t<uint8_t, py::array::c_style>;
using Int8 = py::array_t<int8_t, py::array::c_style>;
using Floats = py::array_t<float, py::array::c_style>;

kernels::RowDot by_name(const std::string& name) {
  if (name == "auto") return kernels::best_row_dot();
  if (name == "scalar") return &kernels::row_dot_scalar;
  if (name == "avx2") {
    if (!kernels::cpu_has_avx2()) throw py::value_error("this CPU has no AVX2; use kernel='scalar'");
    return &kernels::row_dot_avx2;
  }
  throw py::value_error("kernel must be 'auto', 'scalar' or 'avx2', not '" + name + "'");
}

}  // namespace

void register_kernels(py::module_& m) {
  m.def("kernel_name", &kernels::best_kernel_name, "The ternary kernel this CPU runs.");
  m.def("cpu_has_avx2", &kernels::cpu_has_avx2);
  m.def(
      "ternary_gemm",
      [](Packed weights, int64_t k, float w_scale, Int8 xq, Floats x_scale, int n_threads,
         const std::string& kernel) {
        if (weights.ndim() != 2 || weights.shape(1) * 4 != k) {
          throw py::value_error("weights must be (rows, k/4) uint8");
        }
        if (xq.ndim() != 2 || xq.shape(1) != k) throw py::value_error("activations must be (n, k) int8");
        if (x_scale.ndim() != 1 || x_scale.shape(0) != xq.shape(0)) {
          throw py::value_error("x_scale must have one value per activation row");
        }
        const kernels::RowDot dot = by_name(kernel);
        const int64_t rows = weights.shape(0), n = xq.shape(0);
        Floats y({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(rows)});
        const uint8_t* w = weights.data();
        const int8_t* x = xq.data();
        const float* xs = x_scale.data();
        float* out = y.mutable_data();
        {
          py::gil_scoped_release release;  // the arrays are held by this call's references
          kernels::gemm(w, rows, k, w_scale, x, xs, n, out, n_threads, dot);
        }
        return y;
      },
      py::arg("weights"), py::arg("k"), py::arg("w_scale"), py::arg("xq"), py::arg("x_scale"),
      py::arg("n_threads"), py::arg("kernel"), "Internal: validated by bitnet.kernels.");
}

}  // namespace bitnet
