// bitnet._core.kernels: ternary x int8 GEMV/GEMM, activation quantization, layout conversion.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "bindings/kernel_args.h"
#include "kernels/kquant.h"
#include "kernels/ternary.h"

namespace py = pybind11;

namespace bitnet {

namespace {

using namespace kernel_args;

std::vector<std::string> available_kernels() {
  std::vector<std::string> names{"scalar"};
  for (const kernels::Impl* impl :
       {kernels::avx2_impl(), kernels::avx512vnni_impl(), kernels::amx_impl(), kernels::neon_impl()}) {
    if (impl != nullptr) names.emplace_back(impl->name);
  }
  return names;
}

}  // namespace

void register_kernels(py::module_& m) {
  m.def("kernel_name", [] { return std::string(kernels::best_impl().name); }, "The ternary kernel this CPU runs.");
  m.def("available_kernels", &available_kernels, "Kernel implementations this CPU can run.");
  m.def("cpu_has_avx2", &kernels::cpu_has_avx2);
  m.def(
      "quantize_activations",
      [](Floats x, bool simd) {
        if (x.ndim() != 2) throw py::value_error("x must be (n, k) float32");
        const int64_t n = x.shape(0), k = x.shape(1);
        Int8 q({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(k)});
        Floats scale(static_cast<py::ssize_t>(n));
        Int32 sum(static_cast<py::ssize_t>(n));
        const float* src = x.data();
        int8_t* dq = q.mutable_data();
        float* ds = scale.mutable_data();
        int32_t* dsum = sum.mutable_data();
        {
          py::gil_scoped_release release;
          const auto fn = simd ? &kernels::quantize_row : &kernels::quantize_row_scalar;
          for (int64_t t = 0; t < n; ++t) ds[t] = fn(src + t * k, k, dq + t * k, dsum + t);
        }
        return py::make_tuple(q, scale, sum);
      },
      py::arg("x"), py::arg("simd") = true,
      "Internal: per-row absmax int8 quantization -> (q, scale, sum of q); simd=False: the scalar reference.");
  m.def(
      "ternary_gemm",
      [](Bytes weights, int64_t k, const std::string& layout, float w_scale, Int8 xq, Floats x_scale, Int32 x_sum,
         int n_threads, const std::string& kernel, const std::string& batch_path) {
        const kernels::Layout lay = layout_by_name(layout);
        check_k(lay, k);
        if (weights.ndim() != 2 || weights.shape(1) != kernels::row_bytes(lay, k)) {
          throw py::value_error("weights must be (rows, " + std::to_string(kernels::row_bytes(lay, k)) + ") uint8");
        }
        if (xq.ndim() != 2 || xq.shape(1) != k) throw py::value_error("activations must be (n, k) int8");
        if (x_scale.ndim() != 1 || x_scale.shape(0) != xq.shape(0) || x_sum.ndim() != 1 ||
            x_sum.shape(0) != xq.shape(0)) {
          throw py::value_error("x_scale and x_sum must have one value per activation row");
        }
        check_threads(n_threads);
        const kernels::Impl& impl = by_name(kernel);
        kernels::BatchPath path = kernels::BatchPath::kAuto;
        if (batch_path == "packed") {
          path = kernels::BatchPath::kPacked;
        } else if (batch_path == "unpacked") {
          if (impl.unpacked_tile == nullptr) {
            throw py::value_error("kernel '" + std::string(impl.name) + "' has no unpacked batch path");
          }
          path = kernels::BatchPath::kUnpacked;
        } else if (batch_path == "multi") {
          if (impl.multi_gemv == nullptr) {
            throw py::value_error("kernel '" + std::string(impl.name) + "' has no multi-token path");
          }
          path = kernels::BatchPath::kMulti;
        } else if (batch_path == "rows") {
          if (impl.rows == nullptr) {
            throw py::value_error("kernel '" + std::string(impl.name) + "' has no row-block (AMX) path");
          }
          path = kernels::BatchPath::kRows;
        } else if (batch_path != "auto") {
          throw py::value_error("batch_path must be 'auto', 'packed', 'unpacked', 'multi' or 'rows', not '" +
                                batch_path + "'");
        }
        const int64_t rows = weights.shape(0), n = xq.shape(0);
        Floats y({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(rows)});
        const kernels::TernaryMatrix w{lay, weights.data(), rows, k, weights.shape(1), w_scale};
        const kernels::QuantizedActivations x{xq.data(), k, x_scale.data(), x_sum.data(), n};
        float* out = y.mutable_data();
        {
          py::gil_scoped_release release;  // the arrays are held by this call's references
          kernels::gemm(impl, w, x, out, rows, n_threads, path);
        }
        return y;
      },
      py::arg("weights"), py::arg("k"), py::arg("layout"), py::arg("w_scale"), py::arg("xq"), py::arg("x_scale"),
      py::arg("x_sum"), py::arg("n_threads"), py::arg("kernel"), py::arg("batch_path") = "auto",
      "Internal: validated by bitnet.kernels. batch_path 'packed' / 'unpacked' / 'multi' forces how a batch runs.");
  m.def(
      "q6k_matmul",
      [](Bytes weights, int64_t k, Floats x, const std::string& kernel) {
        if (k <= 0 || k % kernels::kQ6KBlock != 0) throw py::value_error("k must be a positive multiple of 256");
        const int64_t row = k / kernels::kQ6KBlock * kernels::kQ6KBlockBytes;
        if (weights.ndim() != 2 || weights.shape(1) != row) {
          throw py::value_error("weights must be (rows, " + std::to_string(row) + ") uint8 Q6_K blocks");
        }
        if (x.ndim() != 2 || x.shape(1) != k) throw py::value_error("x must be (n, k) float32");
        kernels::Q6KDotFn fn = &kernels::q6k_dot_scalar;
        if (kernel == "avx2") {
          fn = kernels::q6k_dot_avx2();
          if (fn == nullptr) throw py::value_error("this CPU cannot run the 'avx2' kernel; use kernel='scalar'");
        } else if (kernel != "scalar") {
          throw py::value_error("kernel must be 'scalar' or 'avx2', not '" + kernel + "'");
        }
        const int64_t rows = weights.shape(0), n = x.shape(0), blocks = k / kernels::kQ6KBlock;
        Floats y({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(rows)});
        const float* src = x.data();
        float* out = y.mutable_data();
        {
          py::gil_scoped_release release;
          std::vector<kernels::Q8Block> q(static_cast<size_t>(blocks));
          for (int64_t t = 0; t < n; ++t) {
            kernels::quantize_row_q8(src + t * k, k, q.data());
            fn(weights.data(), row, rows, q.data(), blocks, out + t * rows);
          }
        }
        return y;
      },
      py::arg("weights"), py::arg("k"), py::arg("x"), py::arg("kernel"),
      "Internal: Q6_K rows times float32 activations quantized per 256 values (the head our kernels run).");
  m.def(
      "i2s_to_tq2",
      [](Bytes rows, int64_t k, uint16_t d_fp16) {
        check_k(kernels::Layout::kTQ2, k);
        if (rows.ndim() != 2 || rows.shape(1) * 4 != k) {
          throw py::value_error("rows must be (n, k/4) uint8 with k a multiple of 256");
        }
        const int64_t n = rows.shape(0), out_bytes = kernels::row_bytes(kernels::Layout::kTQ2, k);
        Bytes out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(out_bytes)});
        for (int64_t r = 0; r < n; ++r) {
          kernels::i2s_row_to_tq2(rows.data() + r * (k / 4), k, d_fp16, out.mutable_data() + r * out_bytes);
        }
        return out;
      },
      py::arg("rows"), py::arg("k"), py::arg("d_fp16"), "Internal: I2_S rows -> TQ2_0 blocks with scale d.");
  m.def(
      "tq2_to_i2s",
      [](Bytes rows, int64_t k) {
        check_k(kernels::Layout::kTQ2, k);
        const int64_t in_bytes = kernels::row_bytes(kernels::Layout::kTQ2, k);
        if (rows.ndim() != 2 || rows.shape(1) != in_bytes) {
          throw py::value_error("rows must be (n, k/256*66) uint8 with k a multiple of 256");
        }
        const int64_t n = rows.shape(0);
        Bytes out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(k / 4)});
        for (int64_t r = 0; r < n; ++r) {
          kernels::tq2_row_to_i2s(rows.data() + r * in_bytes, k, out.mutable_data() + r * (k / 4));
        }
        return out;
      },
      py::arg("rows"), py::arg("k"), "Internal: TQ2_0 blocks -> I2_S rows (the block scales are dropped).");
}

}  // namespace bitnet
