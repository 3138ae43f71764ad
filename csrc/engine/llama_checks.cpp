#include "engine/llama_checks.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <optional>
#include <sstream>
#include <vector>

#include "errors.h"
#include "gguf_file.h"

namespace bitnet::engine {

namespace {

constexpr int64_t kMaxLayers = 512;    // LLAMA_MAX_LAYERS of the pinned llama.cpp
constexpr int64_t kMaxExperts = 1024;  // LLAMA_MAX_EXPERTS

size_t element_size(gguf_type type) {
  switch (type) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8: return 1;
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_FLOAT32: return 4;
    default: return 8;
  }
}

// The numbers of a key that holds one number or one per layer; nullopt when the key is absent
// or not numeric (libllama reports wrong types itself).
std::optional<std::vector<double>> numbers(const gguf_context* ctx, const std::string& key) {
  const int64_t id = gguf_find_key(ctx, key.c_str());
  if (id < 0) return std::nullopt;
  auto one = [](gguf_type type, const void* p) -> std::optional<double> {
    switch (type) {
      case GGUF_TYPE_UINT8: return *static_cast<const uint8_t*>(p);
      case GGUF_TYPE_INT8: return *static_cast<const int8_t*>(p);
      case GGUF_TYPE_UINT16: return *static_cast<const uint16_t*>(p);
      case GGUF_TYPE_INT16: return *static_cast<const int16_t*>(p);
      case GGUF_TYPE_UINT32: return *static_cast<const uint32_t*>(p);
      case GGUF_TYPE_INT32: return *static_cast<const int32_t*>(p);
      case GGUF_TYPE_UINT64: return static_cast<double>(*static_cast<const uint64_t*>(p));
      case GGUF_TYPE_INT64: return static_cast<double>(*static_cast<const int64_t*>(p));
      case GGUF_TYPE_FLOAT32: return *static_cast<const float*>(p);
      case GGUF_TYPE_FLOAT64: return *static_cast<const double*>(p);
      default: return std::nullopt;
    }
  };
  const gguf_type type = gguf_get_kv_type(ctx, id);
  std::vector<double> out;
  if (type == GGUF_TYPE_ARRAY) {
    const gguf_type sub = gguf_get_arr_type(ctx, id);
    if (sub == GGUF_TYPE_STRING || sub == GGUF_TYPE_ARRAY || sub == GGUF_TYPE_BOOL) return std::nullopt;
    const auto* data = static_cast<const uint8_t*>(gguf_get_arr_data(ctx, id));
    const size_t size = element_size(sub);
    for (size_t i = 0; i < gguf_get_arr_n(ctx, id); ++i) {
      const std::optional<double> v = one(sub, data + i * size);
      if (!v) return std::nullopt;
      out.push_back(*v);
    }
    return out;
  }
  if (type == GGUF_TYPE_STRING || type == GGUF_TYPE_BOOL) return std::nullopt;
  const std::optional<double> v = one(type, gguf_get_val_data(ctx, id));
  if (!v) return std::nullopt;
  out.push_back(*v);
  return out;
}

std::string number(double v) {
  std::ostringstream out;
  out << std::setprecision(10) << v;
  return out.str();
}

class Checker {
 public:
  Checker(const gguf_context* ctx, const std::string& path)
      : ctx_(ctx), path_(path), arch_(gguf_string(ctx, "general.architecture", "")) {}

  std::string key(const char* suffix) const { return arch_ + "." + suffix; }

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw ModelLoadError("'" + path_ + "' has an invalid '" + key + "': " + what +
                         " (a damaged or mis-converted file; libllama would abort on it)");
  }

  std::optional<std::vector<double>> get(const char* suffix) const { return numbers(ctx_, key(suffix)); }

  // Largest value of a key, or `fallback` when absent; every value must be in [lo, hi].
  double range(const char* suffix, double lo, double hi, double fallback) const {
    const auto values = get(suffix);
    if (!values || values->empty()) return fallback;
    for (double v : *values) {
      if (!std::isfinite(v) || v < lo || v > hi) {
        fail(key(suffix), "value " + number(v) + " is outside [" + number(lo) + ", " + number(hi) + "]");
      }
    }
    return *std::max_element(values->begin(), values->end());
  }

  const gguf_context* ctx_;
  const std::string& path_;
  std::string arch_;
};

}  // namespace

void check_llama_hparams(const gguf_context* ctx, const std::string& path) {
  const Checker c(ctx, path);
  if (c.arch_.empty()) return;  // libllama reports a missing architecture itself
  constexpr double kInt = 2147483647.0;

  const double n_layer = c.range("block_count", 1, kMaxLayers, 1);
  c.range("nextn_predict_layers", 0, n_layer, 0);
  c.range("context_length", 1, kInt, 1);
  const double n_embd = c.range("embedding_length", 1, kInt, 1);

  // Mixture of experts: the same consistency libllama asserts.
  const double n_expert = c.range("expert_count", 0, kMaxExperts, 0);
  const double n_used = c.range("expert_used_count", 0, kMaxExperts, 0);
  const double n_groups = c.range("expert_group_count", 0, kMaxExperts, 0);
  const double n_group_used = c.range("expert_group_used_count", 0, kMaxExperts, 0);
  if (n_used > n_expert) c.fail(c.key("expert_used_count"), "more experts used than there are");
  if (n_expert > 0) {
    if (n_used == 0) c.fail(c.key("expert_used_count"), "0 with experts present");
    if (n_groups >= n_expert) c.fail(c.key("expert_group_count"), "not fewer groups than experts");
    if (n_groups > 1 && (std::fmod(n_expert, n_groups) != 0 || n_group_used <= 0 || n_group_used >= n_groups)) {
      c.fail(c.key("expert_group_count"), "experts do not split into the groups used");
    }
  } else if (n_groups != 0) {
    c.fail(c.key("expert_group_count"), "expert groups without experts");
  }

  const int64_t scaling_id = gguf_find_key(ctx, c.key("rope.scaling.type").c_str());
  if (scaling_id >= 0 && gguf_get_kv_type(ctx, scaling_id) == GGUF_TYPE_STRING) {
    const std::string scaling = gguf_get_val_str(ctx, scaling_id);
    if (scaling != "none" && scaling != "linear" && scaling != "yarn" && scaling != "longrope") {
      c.fail(c.key("rope.scaling.type"), "'" + scaling + "' is not none, linear, yarn or longrope");
    }
  }

  // Attention shapes: heads group evenly into kv heads, rotary dims are pairs within a head.
  const auto heads = c.get("attention.head_count");
  const auto kv_heads = c.get("attention.head_count_kv");
  double max_head = 0;
  if (heads) {
    c.range("attention.head_count", 0, kInt, 0);
    for (size_t i = 0; i < heads->size(); ++i) {
      const double h = (*heads)[i];
      max_head = std::max(max_head, h);
      if (!kv_heads || kv_heads->empty()) continue;
      const double kv = (*kv_heads)[std::min(i, kv_heads->size() - 1)];
      if (h > 0 && (kv <= 0 || kv > h || std::fmod(h, kv) != 0)) {
        c.fail(c.key("attention.head_count_kv"), number(kv) + " kv heads for " + number(h) + " heads");
      }
    }
  }
  if (kv_heads) c.range("attention.head_count_kv", 0, kInt, 0);
  if (max_head > 0) {
    const double head_dim = c.range("attention.key_length", 1, kInt, std::floor(n_embd / max_head));
    c.range("attention.value_length", 1, kInt, 1);
    if (head_dim < 1) c.fail(c.key("embedding_length"), "smaller than the number of heads");
    const double n_rot = c.range("rope.dimension_count", 0, head_dim, head_dim);
    if (std::fmod(n_rot, 2) != 0) c.fail(c.key("rope.dimension_count"), "odd; rotary embeddings rotate pairs");
  }

  c.range("attention.layer_norm_rms_epsilon", 0, 1e30, 0);
  c.range("attention.layer_norm_epsilon", 0, 1e30, 0);
  c.range("rope.freq_base", 1e-30, 1e30, 1);
  c.range("rope.scaling.factor", 0, 1e30, 0);
}

}  // namespace bitnet::engine
