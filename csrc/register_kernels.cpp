// bitnet._core kernels: ternary x int8 GEMV/GEMM, activation quantization, layout conversion.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "errors.h"
#include "ggml-cpp.h"
#include "ggml-cpu.h"
#include "kernels/kquant.h"
#include "kernels/ternary.h"
#include "kernels/thread_pool.h"

namespace py = pybind11;

namespace bitnet {

namespace {

using Bytes = py::array_t<uint8_t, py::array::c_style>;
using Int8 = py::array_t<int8_t, py::array::c_style>;
using Int32 = py::array_t<int32_t, py::array::c_style>;
using Floats = py::array_t<float, py::array::c_style>;

const kernels::Impl& by_name(const std::string& name) {
  const kernels::Impl* impl = kernels::impl_by_name(name.c_str());
  if (impl != nullptr) return *impl;
  for (const char* known : {"scalar", "avx2", "avx512vnni", "neon"}) {
    if (name == known) throw py::value_error("this CPU cannot run the '" + name + "' kernel; use kernel='auto'");
  }
  throw py::value_error("kernel must be 'auto', 'scalar', 'avx2', 'avx512vnni' or 'neon', not '" + name + "'");
}

kernels::Layout layout_by_name(const std::string& name) {
  if (name == "i2_s") return kernels::Layout::kI2S;
  if (name == "tq2_0") return kernels::Layout::kTQ2;
  throw py::value_error("layout must be 'i2_s' or 'tq2_0', not '" + name + "'");
}

// The kernels read whole blocks of a row: k must be a positive multiple of the block (a
// 128-weight group for I2_S, 256 for TQ2_0), or they would read past each row.
void check_k(kernels::Layout layout, int64_t k) {
  const int64_t block = layout == kernels::Layout::kI2S ? kernels::kGroup : kernels::kTq2Block;
  if (k <= 0 || k % block != 0 || k > (int64_t{1} << 30)) {
    throw py::value_error("k=" + std::to_string(k) + " must be a positive multiple of " + std::to_string(block) +
                          " for layout " + (layout == kernels::Layout::kI2S ? "i2_s" : "tq2_0"));
  }
}

// ggml's thread pools abort beyond GGML_MAX_N_THREADS threads; ours are sized alike.
void check_threads(int n_threads) {
  if (n_threads < 1 || n_threads > GGML_MAX_N_THREADS) {
    throw py::value_error("n_threads=" + std::to_string(n_threads) + " must be from 1 to " +
                          std::to_string(GGML_MAX_N_THREADS));
  }
}

std::vector<std::string> available_kernels() {
  std::vector<std::string> names{"scalar"};
  for (const kernels::Impl* impl : {kernels::avx2_impl(), kernels::avx512vnni_impl(), kernels::neon_impl()}) {
    if (impl != nullptr) names.emplace_back(impl->name);
  }
  return names;
}

// ggml's own matmul on TQ2_0 weights (the path kernels="ggml" runs), for benchmarks and as a
// second opinion in tests: ggml quantizes the activations to Q8_K and runs ggml_vec_dot_tq2_0_q8_K.
class GgmlTernaryMatmul {
 public:
  GgmlTernaryMatmul(Bytes weights, int64_t k) : weights_(std::move(weights)), k_(k) {
    check_k(kernels::Layout::kTQ2, k);
    const int64_t row = kernels::row_bytes(kernels::Layout::kTQ2, k);
    if (weights_.ndim() != 2 || weights_.shape(1) != row) {
      throw py::value_error("weights must be (rows, k/256*66) uint8 TQ2_0 blocks, k a multiple of 256");
    }
    rows_ = weights_.shape(0);
  }
  ~GgmlTernaryMatmul() {
    if (pool_ != nullptr) ggml_threadpool_free(pool_);
  }

  Floats run(Floats x, int n_threads) {
    if (x.ndim() != 2 || x.shape(1) != k_) throw py::value_error("x must be (n, k) float32");
    check_threads(n_threads);
    const int64_t n = x.shape(0);
    Floats y({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(rows_)});
    const float* xp = x.data();
    float* yp = y.mutable_data();
    py::gil_scoped_release release;
    if (pool_ == nullptr || pool_threads_ != n_threads) {  // a persistent pool, as the engine has
      if (pool_ != nullptr) ggml_threadpool_free(pool_);
      ggml_threadpool_params params = ggml_threadpool_params_default(n_threads);
      pool_ = ggml_threadpool_new(&params);
      pool_threads_ = n_threads;
    }
    compute(xp, n, yp, n_threads, pool_);
    return y;
  }

  int64_t k() const { return k_; }
  int64_t rows() const { return rows_; }

  // y = W x for n tokens on `pool` (n_threads threads); no Python objects, no GIL needed.
  void compute(const float* xp, int64_t n, float* yp, int n_threads, ggml_threadpool* pool) {
    ggml_init_params ip{};
    ip.mem_size = 3 * ggml_tensor_overhead() + ggml_graph_overhead() + 1024;
    ip.no_alloc = true;
    ggml_context_ptr ctx(ggml_init(ip));
    ggml_tensor* w = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_TQ2_0, k_, rows_);
    ggml_tensor* xt = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F32, k_, n);
    w->data = const_cast<uint8_t*>(weights_.data());
    xt->data = const_cast<float*>(xp);
    ggml_tensor* out = ggml_mul_mat(ctx.get(), w, xt);
    out->data = yp;
    ggml_cgraph* gf = ggml_new_graph(ctx.get());
    ggml_build_forward_expand(gf, out);
    ggml_cplan plan = ggml_graph_plan(gf, n_threads, pool);
    work_.resize(plan.work_size);
    plan.work_data = work_.data();
    if (ggml_graph_compute(gf, &plan) != GGML_STATUS_SUCCESS) throw EngineError("ggml_graph_compute failed");
  }

 private:
  Bytes weights_;
  int64_t k_ = 0;
  int64_t rows_ = 0;
  ggml_threadpool* pool_ = nullptr;
  int pool_threads_ = 0;
  std::vector<uint8_t> work_;
};

// One-token GEMV timing without Python in the loop (bench_kernels.py): `repeats` passes over the
// matrices in turn, the seconds per matrix of each pass. Ours: uint8 rows in `layout` on the
// kernels' pool; ggml: GgmlTernaryMatmul objects on one persistent ggml pool.
std::vector<double> time_gemv(const py::list& matrices, int64_t k, const std::string& layout, float scale, Floats x,
                              int n_threads, int repeats) {
  if (x.ndim() != 1 || x.shape(0) != k) throw py::value_error("x must be (k,) float32");
  check_threads(n_threads);
  if (repeats < 1 || repeats > 100000 || matrices.empty()) {
    throw py::value_error("need repeats from 1 to 100000 and at least one matrix");
  }
  std::vector<double> out;
  std::vector<float> y;
  if (layout == "ggml") {
    std::vector<GgmlTernaryMatmul*> mats;
    for (const py::handle& h : matrices) mats.push_back(h.cast<GgmlTernaryMatmul*>());
    for (GgmlTernaryMatmul* m : mats) {
      if (m->k() != k) throw py::value_error("every matrix must have k columns");
      y.resize(std::max<size_t>(y.size(), static_cast<size_t>(m->rows())));
    }
    py::gil_scoped_release release;
    ggml_threadpool_params params = ggml_threadpool_params_default(n_threads);
    ggml_threadpool* pool = ggml_threadpool_new(&params);
    for (int rep = 0; rep < repeats; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      for (GgmlTernaryMatmul* m : mats) m->compute(x.data(), 1, y.data(), n_threads, pool);
      out.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / mats.size());
    }
    ggml_threadpool_free(pool);
    return out;
  }
  const kernels::Layout lay = layout_by_name(layout);
  check_k(lay, k);
  std::vector<Bytes> arrays;
  for (const py::handle& h : matrices) {
    Bytes a = h.cast<Bytes>();
    if (a.ndim() != 2 || a.shape(1) != kernels::row_bytes(lay, k)) {
      throw py::value_error("matrices must be (rows, " + std::to_string(kernels::row_bytes(lay, k)) + ") uint8");
    }
    y.resize(std::max<size_t>(y.size(), static_cast<size_t>(a.shape(0))));
    arrays.push_back(std::move(a));
  }
  std::vector<int8_t> q(static_cast<size_t>(k));
  int32_t sum = 0;
  float x_scale = kernels::quantize_row(x.data(), k, q.data(), &sum);
  const kernels::QuantizedActivations xa{q.data(), k, &x_scale, &sum, 1};
  const kernels::Impl& impl = kernels::best_impl();
  py::gil_scoped_release release;  // the arrays are held by `arrays`
  for (int rep = 0; rep < repeats; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (const Bytes& a : arrays) {
      const kernels::TernaryMatrix w{lay, a.data(), a.shape(0), k, a.shape(1), scale};
      kernels::gemm(impl, w, xa, y.data(), a.shape(0), n_threads);
    }
    out.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / arrays.size());
  }
  return out;
}

// Read bandwidth of this machine in GB/s: n_threads threads each summing their share of a
// buffer of `bytes` (best of `repeats`), the roofline of a memory-bound GEMV.
double memory_read_bandwidth(int64_t bytes, int n_threads, int repeats) {
  check_threads(n_threads);
  if (bytes < (1 << 20) || bytes > (int64_t{1} << 40) || repeats < 1 || repeats > 1000) {
    throw py::value_error("need bytes from 1 MiB to 1 TiB and repeats from 1 to 1000");
  }
  const int64_t n = bytes / 8;
  // On transparent huge pages where the kernel gives them, as the engine's weights are: over
  // 4 KiB pages the same loop reads ~20% slower (a page walk every 64 lines, and the hardware
  // prefetchers stop at page ends), which would understate the roofline.
  constexpr size_t kHugePage = size_t{2} << 20;
  const size_t alloc = (static_cast<size_t>(n) * 8 + kHugePage - 1) / kHugePage * kHugePage;
  std::unique_ptr<uint64_t, void (*)(void*)> buf(static_cast<uint64_t*>(std::aligned_alloc(kHugePage, alloc)), &std::free);
  if (!buf) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  ::madvise(buf.get(), alloc, MADV_HUGEPAGE);
#endif
  uint64_t* const data = buf.get();
  const int64_t per = (n + n_threads - 1) / n_threads;
  std::vector<uint64_t> sums(n_threads, 0);
  auto fill = [&](int i) {
    for (int64_t j = i * per; j < std::min(n, (i + 1) * per); ++j) data[j] = static_cast<uint64_t>(j);
  };
  kernels::ThreadPool::instance().run(n_threads, n_threads, fill);  // first touch by the readers
  double best = 0.0;
  for (int rep = 0; rep < repeats; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    kernels::ThreadPool::instance().run(n_threads, n_threads, [&](int i) {
      uint64_t a = 0, b = 0, c = 0, d = 0;  // four chains: the adds never limit the loads
      const int64_t end = std::min(n, (i + 1) * per);
      int64_t j = i * per;
      for (; j + 4 <= end; j += 4) {
        a += data[j];
        b += data[j + 1];
        c += data[j + 2];
        d += data[j + 3];
      }
      for (; j < end; ++j) a += data[j];
      sums[i] += a + b + c + d;
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(n * 8) / s / 1e9);
  }
  volatile uint64_t sink = 0;  // keeps the sums alive
  for (uint64_t v : sums) sink = sink + v;
  return best;
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
        } else if (batch_path != "auto") {
          throw py::value_error("batch_path must be 'auto', 'packed' or 'unpacked', not '" + batch_path + "'");
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
      "Internal: validated by bitnet.kernels. batch_path 'packed' / 'unpacked' forces how a batch runs.");
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
  py::class_<GgmlTernaryMatmul>(m, "GgmlTernaryMatmul", "Internal: ggml's TQ2_0 matmul, for benchmarks and tests.")
      .def(py::init<Bytes, int64_t>(), py::arg("weights"), py::arg("k"))
      .def("run", &GgmlTernaryMatmul::run, py::arg("x"), py::arg("n_threads"));
  m.def("time_gemv", &time_gemv, py::arg("matrices"), py::arg("k"), py::arg("layout"), py::arg("scale"), py::arg("x"),
        py::arg("n_threads"), py::arg("repeats"),
        "Internal (bench_kernels.py): seconds per matrix of each of `repeats` passes of one-token GEMVs over "
        "`matrices`; layout 'i2_s' / 'tq2_0' (our kernels on uint8 rows) or 'ggml' (GgmlTernaryMatmul objects).");
  m.def("memory_read_bandwidth", &memory_read_bandwidth, py::arg("bytes"), py::arg("n_threads"),
        py::arg("repeats") = 3, py::call_guard<py::gil_scoped_release>(),
        "Internal: read bandwidth in GB/s over a buffer of `bytes` on n_threads threads.");
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
