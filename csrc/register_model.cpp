// Python bindings of Model and Generator (bitnet._core).
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstring>
#include <functional>

#include "errors.h"
#include "model/model.h"

namespace py = pybind11;

namespace bitnet {

namespace {

using model::Generator;
using model::Model;

py::object python_error_class(const char* name) { return py::module_::import("bitnet.errors").attr(name); }

// Lets Ctrl+C stop native work started from the main thread, the only one Python delivers
// signals to. The check runs on the decoding thread at most every 50 ms and takes the GIL only
// then; a pending KeyboardInterrupt is left set for the binding to raise when the call returns.
std::function<bool()> signal_check_for_this_thread() {
  const auto main_ident = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
  if (PyThread_get_thread_ident() != main_ident) return nullptr;
  return [last = std::chrono::steady_clock::time_point{}]() mutable {
    const auto now = std::chrono::steady_clock::now();
    if (now - last < std::chrono::milliseconds(50)) return false;
    last = now;
    py::gil_scoped_acquire gil;
    return PyErr_CheckSignals() != 0;
  };
}

// Runs f without the GIL. What a signal handler raised meanwhile (KeyboardInterrupt) is raised
// afterwards, in place of f's result or of the error that stopping early made f throw.
template <typename F>
auto run_interruptible(F&& f) -> decltype(f()) {
  try {
    auto result = [&] {
      py::gil_scoped_release release;
      return f();
    }();
    if (PyErr_Occurred() != nullptr) throw py::error_already_set();
    return result;
  } catch (py::error_already_set&) {
    throw;
  } catch (...) {
    if (PyErr_Occurred() != nullptr) throw py::error_already_set();
    throw;
  }
}

void translate_errors(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const ModelLoadError& e) {
    py::set_error(python_error_class("ModelLoadError"), e.what());
  } catch (const InvalidArgument& e) {
    py::set_error(PyExc_ValueError, e.what());
  } catch (const EngineError& e) {
    py::set_error(python_error_class("EngineError"), e.what());
  }
}

}  // namespace

void register_model(py::module_& m) {
  py::register_exception_translator(&translate_errors);

  m.def(
      "_take_utf8",
      [](const py::bytes& data, bool flush) {
        std::string bytes = data;
        std::string text = model::take_utf8(&bytes, flush);
        return py::make_tuple(py::str(text), py::bytes(bytes));
      },
      py::arg("data"), py::arg("flush"),
      "Internal, for tests: (complete UTF-8 text of data, incomplete tail) as streams emit them.");

  py::class_<Generator>(m, "Generator", "One running generation; holds its model until it ends.")
      .def(
          "step",
          [](Generator& g) {
            g.set_interrupt_check(signal_check_for_this_thread());
            // The generator owns its model lease; no Python object is touched while stepping.
            return py::str(run_interruptible([&] { return g.step(); }));
          },
          "Advance one token; returns the text that became final (may be empty).")
      .def(
          "run",
          [](Generator& g, std::optional<py::function> on_text) {
            std::function<bool(const std::string&)> callback;
            if (on_text) {
              callback = [&on_text](const std::string& piece) {
                py::gil_scoped_acquire gil;
                return py::bool_((*on_text)(py::str(piece))).cast<bool>();
              };
            }
            g.set_interrupt_check(signal_check_for_this_thread());
            // The loop is native; the callback re-acquires the GIL for itself.
            run_interruptible([&] {
              g.run(callback);
              return true;
            });
          },
          py::arg("on_text") = py::none(),
          "Generate to the end; on_text(piece) gets each piece and returns True to stop.")
      .def("cancel", &Generator::cancel,
           "End the generation from any thread (finish_reason 'abort'), even before it starts.")
      .def("close", &Generator::finish_early, py::call_guard<py::gil_scoped_release>(),
           "End now (finish_reason 'abort' if it was running) and release the model.")
      .def_property_readonly("done", &Generator::done)
      .def_property_readonly("text", [](const Generator& g) { return py::str(g.text()); })
      .def_property_readonly("finish_reason", [](const Generator& g) { return g.stats().finish_reason; })
      .def_property_readonly("tokens", [](const Generator& g) { return g.stats().tokens; })
      .def_property_readonly("n_prompt", [](const Generator& g) { return g.stats().n_prompt; })
      .def_property_readonly("n_prompt_evaluated", [](const Generator& g) { return g.stats().n_prompt_evaluated; })
      .def_property_readonly("prompt_ms", [](const Generator& g) { return g.stats().prompt_ms; })
      .def_property_readonly("generation_ms", [](const Generator& g) { return g.stats().generation_ms; })
      .def_property_readonly("n_generation_decodes", [](const Generator& g) { return g.stats().n_generation_decodes; });

  py::class_<Model>(m, "Model", "A loaded GGUF model: engine, KV cache and vocabulary.")
      .def(py::init([](const std::string& path, const std::string& engine, int n_ctx, int n_batch, int n_threads,
                       int n_threads_batch, bool use_mmap, const std::string& kernels) {
             model::ModelOptions options;
             options.engine = engine;
             options.config.n_ctx = n_ctx;
             options.config.n_batch = n_batch;
             options.config.n_threads = n_threads;
             options.config.n_threads_batch = n_threads_batch;
             options.config.use_mmap = use_mmap;
             options.config.kernels = kernels;
             return std::make_unique<Model>(path, options);
           }),
           py::arg("path"), py::kw_only(), py::arg("engine"), py::arg("n_ctx"), py::arg("n_batch"),
           py::arg("n_threads"), py::arg("n_threads_batch"), py::arg("use_mmap"), py::arg("kernels"),
           // Loading reads only native state; log lines re-acquire the GIL themselves.
           py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("path", &Model::path)
      .def_property_readonly("engine", &Model::engine_name)
      .def_property_readonly("kernels", &Model::kernels)
      .def_property_readonly("architecture", &Model::architecture)
      .def_property_readonly("n_ctx", &Model::n_ctx)
      .def_property_readonly("n_vocab", &Model::n_vocab)
      .def_property_readonly("bos", [](const Model& m) { return m.vocab().bos(); })
      .def_property_readonly("eos", [](const Model& m) { return m.vocab().eos(); })
      .def_property_readonly("eot", [](const Model& m) { return m.vocab().eot(); })
      .def_property_readonly("chat_template", [](const Model& m) { return m.vocab().chat_template(); })
      .def("is_end_of_generation", [](const Model& m, int32_t t) { return m.vocab().is_end_of_generation(t); })
      .def(
          "tokenize",
          [](const Model& m, const std::string& text, bool add_bos, bool special) {
            py::gil_scoped_release release;  // the vocabulary is immutable after load
            return m.vocab().tokenize(text, add_bos, special);
          },
          py::arg("text"), py::kw_only(), py::arg("add_bos"), py::arg("special"))
      .def(
          "detokenize",
          [](const Model& m, const std::vector<int32_t>& tokens, bool special) {
            std::string bytes;
            {
              py::gil_scoped_release release;  // the vocabulary is immutable after load
              bytes = m.vocab().detokenize(tokens, special);
            }
            return py::bytes(bytes);
          },
          py::arg("tokens"), py::kw_only(), py::arg("special"))
      .def(
          "logits",
          [](Model& m, const std::vector<int32_t>& tokens) {
            auto check = signal_check_for_this_thread();
            // Native decode under the model's own lock.
            std::vector<float> values = run_interruptible([&] { return m.logits(tokens, check); });
            py::array_t<float> out({static_cast<py::ssize_t>(tokens.size()), static_cast<py::ssize_t>(m.n_vocab())});
            std::memcpy(out.mutable_data(), values.data(), values.size() * sizeof(float));
            return out;
          },
          py::arg("tokens"))
      .def(
          "start",
          [](Model& m, std::vector<int32_t> prompt, int max_tokens, float temperature, float top_p, int top_k,
             float min_p, float repeat_penalty, int repeat_last_n, uint32_t seed, std::vector<std::string> stop) {
            model::SamplingParams p;
            p.max_tokens = max_tokens;
            p.temperature = temperature;
            p.top_p = top_p;
            p.top_k = top_k;
            p.min_p = min_p;
            p.repeat_penalty = repeat_penalty;
            p.repeat_last_n = repeat_last_n;
            p.seed = seed;
            p.stop = std::move(stop);
            py::gil_scoped_release release;  // waiting for the model's lock must not hold the GIL
            return m.start(std::move(prompt), std::move(p));
          },
          py::arg("prompt"), py::kw_only(), py::arg("max_tokens"), py::arg("temperature"), py::arg("top_p"),
          py::arg("top_k"), py::arg("min_p"), py::arg("repeat_penalty"), py::arg("repeat_last_n"), py::arg("seed"),
          py::arg("stop"), py::keep_alive<0, 1>())
      .def("set_threads", &Model::set_threads, py::arg("n_threads"), py::arg("n_threads_batch"),
           py::call_guard<py::gil_scoped_release>())
      .def("abort", &Model::abort, "Stop the running decode; safe from any thread.");
}

}  // namespace bitnet
