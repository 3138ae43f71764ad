// bitnet._core.model: Model, Generator and the sampling parameters they take.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <limits>

#include "ggml.h"
#include "model/model.h"
#include "model/utf8.h"
#include "bindings/common.h"

namespace py = pybind11;

namespace bitnet {

namespace {

using model::Generator;
using model::Model;

// Limits of what the engines can size (positions and threads are ints in llama.cpp's API).
constexpr int64_t kMaxContext = int64_t{1} << 24;
constexpr int64_t kMaxThreads = GGML_MAX_N_THREADS;  // ggml's thread pools abort beyond it
constexpr int64_t kMaxSequences = 256;               // libllama's LLAMA_MAX_SEQ
constexpr int64_t kMaxLogprobs = 20;                 // OpenAI's bound of top_logprobs

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

// The one place SamplingOptions (bitnet/options.py) meet SamplingParams: every key of `params`
// converted and range-checked (the bounds keep the float conversions and the sampler defined), an
// unknown key refused. Python passes every field, so each default lives in options.py alone.
using SamplingSetter = void (*)(model::SamplingParams&, py::handle, const char*);
const std::vector<std::pair<const char*, SamplingSetter>>& sampling_setters() {
  static const std::vector<std::pair<const char*, SamplingSetter>> setters = {
      {"max_tokens", [](model::SamplingParams& p, py::handle v, const char* n) {
         p.max_tokens = static_cast<int>(pyconv::int_arg(v, n, 0, INT32_MAX));
       }},
      {"temperature", [](model::SamplingParams& p, py::handle v, const char* n) {
         p.temperature = static_cast<float>(pyconv::float_arg(v, n, 0.0, 100.0));
       }},
      {"top_p", [](model::SamplingParams& p, py::handle v, const char* n) {
         p.top_p = static_cast<float>(pyconv::float_arg(v, n, 0.0, 1.0));
       }},
      {"top_k", [](model::SamplingParams& p, py::handle v, const char* n) {
         p.top_k = static_cast<int>(pyconv::int_arg(v, n, 0, INT32_MAX));
       }},
      {"min_p", [](model::SamplingParams& p, py::handle v, const char* n) {
         p.min_p = static_cast<float>(pyconv::float_arg(v, n, 0.0, 1.0));
       }},
      {"repeat_penalty", [](model::SamplingParams& p, py::handle v, const char* n) {
         p.repeat_penalty = static_cast<float>(pyconv::float_arg(v, n, std::numeric_limits<float>::min(), 1e6));
       }},
      {"presence_penalty", [](model::SamplingParams& p, py::handle v, const char* n) {
         p.presence_penalty = static_cast<float>(pyconv::float_arg(v, n, -2.0, 2.0));
       }},
      {"frequency_penalty", [](model::SamplingParams& p, py::handle v, const char* n) {
         p.frequency_penalty = static_cast<float>(pyconv::float_arg(v, n, -2.0, 2.0));
       }},
      {"repeat_last_n", [](model::SamplingParams& p, py::handle v, const char* n) {
         p.repeat_last_n = static_cast<int>(pyconv::int_arg(v, n, 0, kMaxContext));
       }},
      {"seed", [](model::SamplingParams& p, py::handle v, const char* n) {
         p.seed = static_cast<uint32_t>(pyconv::int_arg(v, n, 0, UINT32_MAX));
       }},
      {"stop", [](model::SamplingParams& p, py::handle v, const char* n) { p.stop = pyconv::utf8_list_arg(v, n); }},
      {"logit_bias", [](model::SamplingParams& p, py::handle v, const char* n) {
         if (!py::isinstance<py::list>(v)) throw py::type_error(std::string(n) + " must be a list of [token, bias] pairs");
         for (py::handle pair : py::reinterpret_borrow<py::list>(v)) {
           if (!py::isinstance<py::sequence>(pair) || py::len(pair) != 2) {
             throw py::type_error(std::string(n) + " must be a list of [token, bias] pairs");
           }
           py::sequence s = py::reinterpret_borrow<py::sequence>(pair);
           p.logit_bias.emplace_back(static_cast<int32_t>(pyconv::int_arg(s[0], n, 0, INT32_MAX)),
                                     static_cast<float>(pyconv::float_arg(s[1], n, -100.0, 100.0)));
         }
       }},
      {"grammar", [](model::SamplingParams& p, py::handle v, const char* n) {
         p.grammar = v.is_none() ? std::string() : pyconv::utf8_arg(v, n);
       }},
      {"logprobs", [](model::SamplingParams& p, py::handle v, const char* n) {
         p.logprobs = v.is_none() ? -1 : static_cast<int>(pyconv::int_arg(v, n, 0, kMaxLogprobs));
       }},
  };
  return setters;
}

py::list logprob_entries(const std::vector<model::TokenLogprob>& entries, const model::Vocab& vocab) {
  py::list out;
  for (const model::TokenLogprob& e : entries) {
    py::list top;
    for (const auto& [token, logprob] : e.top) {
      top.append(py::make_tuple(token, py::bytes(vocab.token_bytes(token, true)), logprob));
    }
    out.append(py::make_tuple(e.token, py::bytes(vocab.token_bytes(e.token, true)), e.logprob, top));
  }
  return out;
}

model::SamplingParams sampling_params(py::handle params) {
  if (!py::isinstance<py::dict>(params)) throw py::type_error("params must be a dict of sampling parameters");
  const auto& setters = sampling_setters();
  model::SamplingParams p;
  for (const auto& [key, value] : py::reinterpret_borrow<py::dict>(params)) {
    const std::string name = pyconv::utf8_arg(key, "sampling parameter name");
    auto it = std::find_if(setters.begin(), setters.end(), [&](const auto& s) { return name == s.first; });
    if (it == setters.end()) throw py::type_error("unknown sampling parameter '" + name + "'");
    it->second(p, value, it->first);
  }
  return p;
}

std::string choice_arg(py::handle value, const char* name, std::initializer_list<const char*> choices) {
  const std::string v = pyconv::utf8_arg(value, name);
  std::string allowed;
  for (const char* c : choices) {
    if (v == c) return v;
    allowed += (allowed.empty() ? "'" : ", '") + std::string(c) + "'";
  }
  throw py::value_error(std::string(name) + " must be one of " + allowed + ", not '" + v + "'");
}

}  // namespace

void register_model(py::module_& m) {
  py::list names;
  for (const auto& setter : sampling_setters()) names.append(setter.first);
  m.attr("SAMPLING_PARAMETERS") = py::tuple(names);

  m.def(
      "_take_utf8",
      [](const py::bytes& data, bool flush) {
        std::string bytes = data;
        std::string text = model::take_utf8(&bytes, flush);
        return py::make_tuple(py::str(text), py::bytes(bytes));
      },
      py::arg("data"), py::arg("flush"),
      "Internal, for tests: (complete UTF-8 text of data, incomplete tail) as streams emit them.");

  m.def(
      "_utf8_accepts",
      [](const py::bytes& before, const py::bytes& more) {
        model::Utf8Cursor cursor;
        cursor.advance(before);
        return py::make_tuple(cursor.accepts(more), cursor.at_boundary());
      },
      py::arg("before"), py::arg("more"),
      "Internal, for tests: (whether `more` continues the valid UTF-8 bytes `before`, whether "
      "`before` ends between characters), as grammar-constrained sampling decides.");

  py::class_<Generator>(m, "Generator",
                        "One generation, running on its model's scheduler with the others; dropping it cancels it.")
      .def(
          "step",
          [](Generator& g) {
            g.set_interrupt_check(signal_check_for_this_thread());
            // Waits for the scheduler's thread; no Python object is touched meanwhile.
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
      .def("cancel", &Generator::cancel, py::call_guard<py::gil_scoped_release>(),
           "End the generation from any thread (finish_reason 'abort'), even before it starts.")
      .def("close", &Generator::finish_early, py::call_guard<py::gil_scoped_release>(),
           "End now (finish_reason 'abort' if it was running); returns once the scheduler let it go.")
      .def_property_readonly("done", &Generator::done)
      .def_property_readonly("text", [](const Generator& g) { return py::str(g.text()); })
      .def_property_readonly("finish_reason", [](const Generator& g) { return g.stats().finish_reason; })
      .def_property_readonly("tokens", [](const Generator& g) { return g.stats().tokens; })
      .def_property_readonly("n_prompt", [](const Generator& g) { return g.stats().n_prompt; })
      .def_property_readonly("n_prompt_evaluated", [](const Generator& g) { return g.stats().n_prompt_evaluated; })
      .def_property_readonly("prompt_ms", [](const Generator& g) { return g.stats().prompt_ms; })
      .def_property_readonly("generation_ms", [](const Generator& g) { return g.stats().generation_ms; })
      .def_property_readonly("n_generation_decodes", [](const Generator& g) { return g.stats().n_generation_decodes; })
      .def_property_readonly("queue_ms", [](const Generator& g) { return g.stats().queue_ms; })
      .def(
          "take_logprobs",
          [](Generator& g) { return logprob_entries(g.take_logprobs(), g.vocab()); },
          "Entries (token, bytes, logprob, [(token, bytes, logprob)...]) of the tokens whose text "
          "was handed out since the last call (params logprobs set).")
      .def_property_readonly(
          "logprobs", [](const Generator& g) { return logprob_entries(g.stats().logprobs, g.vocab()); },
          "Every entry of the finished generation's text (params logprobs set).");

  py::class_<Model, std::shared_ptr<Model>>(m, "Model", "A loaded GGUF model: engine, KV cache and vocabulary.")
      .def(py::init([](py::handle path, py::handle engine, py::handle n_ctx, py::handle n_batch, py::handle n_threads,
                       py::handle n_threads_batch, py::handle use_mmap, py::handle kernels, py::handle n_seq,
                       py::handle n_gpu_layers) {
             model::ModelOptions options;
             const std::string file = pyconv::path_arg(path);
             options.engine = choice_arg(engine, "engine", {"auto", "bitnet", "llama"});
             options.config.n_ctx = static_cast<int>(pyconv::int_arg(n_ctx, "n_ctx", 1, kMaxContext));
             options.config.n_batch = static_cast<int>(pyconv::int_arg(n_batch, "n_batch", 1, kMaxContext));
             options.config.n_threads = static_cast<int>(pyconv::int_arg(n_threads, "n_threads", 1, kMaxThreads));
             options.config.n_threads_batch =
                 static_cast<int>(pyconv::int_arg(n_threads_batch, "n_threads_batch", 1, kMaxThreads));
             options.config.use_mmap = pyconv::bool_arg(use_mmap, "use_mmap");
             options.config.kernels = choice_arg(kernels, "kernels", {"auto", "bitnet", "ggml"});
             options.config.n_seq = static_cast<int>(pyconv::int_arg(n_seq, "n_seq", 0, kMaxSequences));
             options.config.n_gpu_layers = static_cast<int>(pyconv::int_arg(n_gpu_layers, "n_gpu_layers", 0, 100000));
             // Loading reads only native state; log lines re-acquire the GIL themselves.
             py::gil_scoped_release release;
             // Destroying a model joins its scheduler thread, which may be logging (and so
             // waiting for the GIL): the last owner lets go of the GIL first.
             return std::shared_ptr<Model>(new Model(file, options), [](Model* m) {
               if (Py_IsInitialized() && PyGILState_Check()) {
                 py::gil_scoped_release unlocked;
                 delete m;
               } else {
                 delete m;
               }
             });
           }),
           py::arg("path"), py::kw_only(), py::arg("engine"), py::arg("n_ctx"), py::arg("n_batch"),
           py::arg("n_threads"), py::arg("n_threads_batch"), py::arg("use_mmap"), py::arg("kernels"),
           py::arg("n_seq") = 0, py::arg("n_gpu_layers") = 0)
      .def_property_readonly("path", [](const Model& m) { return pyconv::decode_utf8(m.path()); })
      .def_property_readonly("engine", &Model::engine_name)
      .def_property_readonly("kernels", &Model::kernels)
      .def_property_readonly("architecture", [](const Model& m) { return pyconv::decode_utf8(m.architecture()); })
      .def_property_readonly("n_ctx", &Model::n_ctx)
      .def_property_readonly("n_vocab", &Model::n_vocab)
      .def_property_readonly("n_seq", &Model::n_seq)
      .def_property_readonly("n_batch", &Model::n_batch)
      .def(
          "scheduler_stats",
          [](Model& m) {
            const model::SchedulerStats st = m.scheduler().stats();
            py::dict d;
            d["batches"] = st.batches;
            d["batch_tokens"] = st.batch_tokens;
            d["aborted_batches"] = st.aborted_batches;
            d["reused_tokens"] = st.reused_tokens;
            d["copied_tokens"] = st.copied_tokens;
            d["max_active"] = st.max_active;
            d["active"] = st.active;
            d["queued"] = st.queued;
            return d;
          },
          "Counters of the continuous-batching scheduler (batches, tokens, reuse, queue).")
      .def_property_readonly("bos", [](const Model& m) { return m.vocab().bos(); })
      .def_property_readonly("eos", [](const Model& m) { return m.vocab().eos(); })
      .def_property_readonly("eot", [](const Model& m) { return m.vocab().eot(); })
      .def_property_readonly("chat_template",
                             [](const Model& m) { return pyconv::decode_utf8(m.vocab().chat_template()); })
      .def(
          "is_end_of_generation",
          [](const Model& m, py::handle token) {
            return m.vocab().is_end_of_generation(static_cast<int32_t>(pyconv::int_arg(token, "token", INT32_MIN, INT32_MAX)));
          },
          py::arg("token"))
      .def(
          "tokenize",
          [](const Model& m, py::handle text, py::handle add_bos, py::handle special) {
            const std::string bytes = pyconv::utf8_arg(text, "text");
            const bool bos = pyconv::bool_arg(add_bos, "add_bos");
            const bool parse_special = pyconv::bool_arg(special, "special");
            py::gil_scoped_release release;  // the vocabulary is immutable after load
            return m.vocab().tokenize(bytes, bos, parse_special);
          },
          py::arg("text"), py::kw_only(), py::arg("add_bos"), py::arg("special"))
      .def(
          "detokenize",
          [](const Model& m, py::handle tokens, py::handle special) {
            const std::vector<int32_t> ids = pyconv::token_list_arg(tokens, "tokens");
            const bool unparse_special = pyconv::bool_arg(special, "special");
            std::string bytes;
            {
              py::gil_scoped_release release;  // the vocabulary is immutable after load
              bytes = m.vocab().detokenize(ids, unparse_special);
            }
            return py::bytes(bytes);
          },
          py::arg("tokens"), py::kw_only(), py::arg("special"))
      .def(
          "logits",
          [](Model& m, py::handle tokens) {
            const std::vector<int32_t> ids = pyconv::token_list_arg(tokens, "tokens");
            auto check = signal_check_for_this_thread();
            // Runs on the scheduler's thread; this one waits without the GIL.
            std::vector<float> values = run_interruptible([&] { return m.logits(ids, check); });
            py::array_t<float> out({static_cast<py::ssize_t>(ids.size()), static_cast<py::ssize_t>(m.n_vocab())});
            std::memcpy(out.mutable_data(), values.data(), values.size() * sizeof(float));
            return out;
          },
          py::arg("tokens"))
      .def(
          "start",
          [](Model& m, py::handle prompt, py::handle params) {
            std::vector<int32_t> tokens = pyconv::token_list_arg(prompt, "prompt");
            model::SamplingParams p = sampling_params(params);
            py::gil_scoped_release release;  // submitting waits for the scheduler's lock
            // The generator holds the model (a shared_ptr), so no keep_alive is needed: pybind11
            // 3.1.0 runs keep_alive<0, 1> even after failed argument conversion, and crashes.
            return m.start(std::move(tokens), std::move(p));
          },
          py::arg("prompt"), py::arg("params"),
          "Start a generation of `prompt` (token ids) with `params`, a dict with every key of "
          "SAMPLING_PARAMETERS.")
      .def(
          "set_threads",
          [](Model& m, py::handle n_threads, py::handle n_threads_batch) {
            const int n = static_cast<int>(pyconv::int_arg(n_threads, "n_threads", 1, kMaxThreads));
            const int nb = static_cast<int>(pyconv::int_arg(n_threads_batch, "n_threads_batch", 1, kMaxThreads));
            py::gil_scoped_release release;  // waits for the running batch
            m.set_threads(n, nb);
          },
          py::arg("n_threads"), py::arg("n_threads_batch"))
      .def("abort", &Model::abort, "Stop the running decode; safe from any thread.");

  m.def(
      "check_text",
      [](py::handle text, const std::string& name) { pyconv::utf8_arg(text, name.c_str()); },
      py::arg("text"), py::arg("name"),
      "Raise TypeError unless text is a str, ValueError (naming `name` and the position) unless it is "
      "valid Unicode: the check every text argument of _core makes.");
}

}  // namespace bitnet
