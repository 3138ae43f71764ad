// bitnet._core.bench: what benchmarks/ measure against (ggml's own ternary matmul, GEMV timing
// without Python in the loop, the machine's read bandwidth). Not part of the library's API.
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

#include "bindings/kernel_args.h"
#include "errors.h"
#include "ggml-cpp.h"
#include "ggml-cpu.h"
#include "kernels/ternary.h"
#include "kernels/thread_pool.h"

namespace py = pybind11;

namespace bitnet {

namespace {

using namespace kernel_args;

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

void register_bench(py::module_& m) {
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
}

}  // namespace bitnet
