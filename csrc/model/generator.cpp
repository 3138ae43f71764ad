#include "model/generator.h"

#include <algorithm>
#include <chrono>

#include "errors.h"
#include "model/model.h"

namespace bitnet::model {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

// Length of the UTF-8 sequence starting with `lead`, or 0 when it cannot start one.
int utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// Whether byte `k` (1-based) of a sequence led by `lead` may be `c`: continuation bytes, with
// the narrower second-byte ranges that exclude overlong forms, surrogates and code points past
// U+10FFFF (what Python's strict decoder rejects).
bool utf8_continuation_ok(unsigned char lead, int k, unsigned char c) {
  if (k == 1) {
    if (lead == 0xE0) return c >= 0xA0 && c <= 0xBF;
    if (lead == 0xED) return c >= 0x80 && c <= 0x9F;
    if (lead == 0xF0) return c >= 0x90 && c <= 0xBF;
    if (lead == 0xF4) return c >= 0x80 && c <= 0x8F;
  }
  return (c & 0xC0) == 0x80;
}

}  // namespace

std::string take_utf8(std::string* bytes, bool flush) {
  std::string out;
  const std::string& b = *bytes;
  size_t i = 0;
  while (i < b.size()) {
    const unsigned char lead = static_cast<unsigned char>(b[i]);
    const int len = utf8_length(lead);
    // Count how many bytes after the lead are valid for this sequence.
    int good = 1;
    while (good < len && i + good < b.size() &&
           utf8_continuation_ok(lead, good, static_cast<unsigned char>(b[i + good]))) {
      ++good;
    }
    if (len > 0 && good == len) {
      out.append(b, i, len);
      i += len;
    } else if (len > 0 && i + good == b.size() && !flush) {
      break;  // a valid start of a character whose remaining bytes have not arrived yet
    } else {
      out += kReplacement;
      ++i;
    }
  }
  bytes->erase(0, i);
  return out;
}

Generator::Generator(std::shared_ptr<Model> model, ModelSession session, std::vector<int32_t> prompt,
                     SamplingParams params)
    : owner_(std::move(model)),
      session_(std::move(session)),
      prompt_(std::move(prompt)),
      params_(std::move(params)) {
  const int n_ctx = session_.engine.n_ctx();
  if (prompt_.empty()) throw InvalidArgument("the prompt is empty (no tokens)");
  if (static_cast<int>(prompt_.size()) >= n_ctx) {
    throw InvalidArgument("the prompt has " + std::to_string(prompt_.size()) +
                          " tokens, which does not fit the context of " + std::to_string(n_ctx) +
                          " tokens (n_ctx) with room to generate; shorten the prompt or raise n_ctx");
  }
  session_.engine.check_tokens(prompt_.data(), prompt_.size());  // before the sampler sees them
  if (params_.max_tokens < 0) throw InvalidArgument("max_tokens must be >= 0");
  for (const std::string& s : params_.stop) {
    if (s.empty()) throw InvalidArgument("stop strings must not be empty");
  }
  stats_.n_prompt = static_cast<int>(prompt_.size());

  sampler_ = llama_sampler_chain_init(llama_sampler_chain_default_params());
  if (params_.repeat_penalty != 1.0f) {
    llama_sampler_chain_add(sampler_, llama_sampler_init_penalties(session_.engine.n_vocab(), params_.repeat_last_n, params_.repeat_penalty, 0.0f, 0.0f));
  }
  if (params_.temperature <= 0.0f) {
    llama_sampler_chain_add(sampler_, llama_sampler_init_greedy());
  } else {
    if (params_.top_k > 0) llama_sampler_chain_add(sampler_, llama_sampler_init_top_k(params_.top_k));
    if (params_.top_p < 1.0f) llama_sampler_chain_add(sampler_, llama_sampler_init_top_p(params_.top_p, 1));
    if (params_.min_p > 0.0f) llama_sampler_chain_add(sampler_, llama_sampler_init_min_p(params_.min_p, 1));
    llama_sampler_chain_add(sampler_, llama_sampler_init_temp(params_.temperature));
    llama_sampler_chain_add(sampler_, llama_sampler_init_dist(params_.seed));
  }
  // Prompt tokens count as history for the repetition penalty.
  for (int32_t t : prompt_) llama_sampler_accept(sampler_, t);
  logits_.resize(static_cast<size_t>(session_.engine.n_vocab()));
  candidates_.resize(logits_.size());
  session_.engine.reset_abort();
}

Generator::~Generator() {
  finish("abort");  // no-op when it already finished
  if (sampler_ != nullptr) llama_sampler_free(sampler_);
}

void Generator::prefill() {
  prefilled_ = true;
  KvCache& cache = session_.cache;
  const size_t keep = cache.reuse_prefix(prompt_);
  const auto t0 = Clock::now();
  const int n_eval = static_cast<int>(prompt_.size() - keep);
  const bool ok = cache.append(prompt_.data() + keep, n_eval, false, logits_.data());
  stats_.prompt_ms = ms_since(t0);
  stats_.n_prompt_evaluated = n_eval;
  if (!ok) finish("abort");
}

int32_t Generator::sample() {
  for (size_t i = 0; i < logits_.size(); ++i) {
    candidates_[i] = llama_token_data{static_cast<llama_token>(i), logits_[i], 0.0f};
  }
  llama_token_data_array array{candidates_.data(), candidates_.size(), -1, false};
  llama_sampler_apply(sampler_, &array);
  if (array.selected < 0 || static_cast<size_t>(array.selected) >= array.size) {
    throw EngineError("the sampler selected no token");
  }
  const llama_token token = array.data[array.selected].id;
  llama_sampler_accept(sampler_, token);
  return token;
}

std::string Generator::take_final_text(bool flush) {
  text_ += take_utf8(&pending_bytes_, flush);
  // A complete stop string ends the text right before it.
  size_t stop_at = std::string::npos;
  for (const std::string& s : params_.stop) stop_at = std::min(stop_at, text_.find(s));
  if (stop_at != std::string::npos) {
    std::string out = text_.substr(0, stop_at);
    text_.clear();
    final_text_ += out;
    finish("stop");
    return out;
  }
  // Hold back a tail that could still grow into a stop string.
  size_t hold = 0;
  if (!flush) {
    for (const std::string& s : params_.stop) {
      for (size_t k = std::min(s.size() - 1, text_.size()); k > hold; --k) {
        if (text_.compare(text_.size() - k, k, s, 0, k) == 0) {
          hold = k;
          break;
        }
      }
    }
  }
  std::string out = text_.substr(0, text_.size() - hold);
  text_.erase(0, text_.size() - hold);
  final_text_ += out;
  return out;
}

void Generator::finish(const char* reason) {
  if (finished_) return;
  finished_ = true;
  stats_.finish_reason = reason;
  session_.engine.set_interrupt_check(nullptr);
  session_.lease.release();
}

std::string Generator::step() {
  if (finished_) return "";
  // Installed while this generator holds the model; finish() removes it before letting go.
  session_.engine.set_interrupt_check([this] {
    return cancelled_.load(std::memory_order_relaxed) || (interrupt_check_ && interrupt_check_());
  });
  std::string out = advance();
  if (!finished_) session_.engine.set_interrupt_check(nullptr);
  return out;
}

std::string Generator::advance() {
  engine::Engine& engine = session_.engine;
  if (!prefilled_) {
    prefill();
    if (finished_) return "";
  }
  KvCache& cache = session_.cache;
  if (static_cast<int>(stats_.tokens.size()) >= params_.max_tokens || cache.size() >= cache.capacity()) {
    std::string out = take_final_text(true);
    finish("length");
    return out;
  }
  if (engine.abort_requested() || cancelled_.load(std::memory_order_relaxed)) {
    std::string out = take_final_text(true);
    finish("abort");
    return out;
  }
  const int32_t token = sample();
  if (session_.vocab.is_end_of_generation(token)) {
    std::string out = take_final_text(true);
    finish("stop");
    return out;
  }
  stats_.tokens.push_back(token);
  pending_bytes_ += session_.vocab.token_bytes(token, false);
  std::string out = take_final_text(false);
  if (finished_) return out;

  const bool more = static_cast<int>(stats_.tokens.size()) < params_.max_tokens && cache.size() + 1 < cache.capacity();
  if (more) {
    const auto t0 = Clock::now();
    const bool ok = cache.append(&token, 1, false, logits_.data());
    stats_.generation_ms += ms_since(t0);
    ++stats_.n_generation_decodes;
    if (!ok) {
      out += take_final_text(true);
      finish("abort");
      return out;
    }
  } else if (cache.size() + 1 >= cache.capacity()) {
    out += take_final_text(true);
    finish("length");
  }
  return out;
}

void Generator::run(const std::function<bool(const std::string&)>& on_text) {
  try {
    while (!finished_) {
      const std::string piece = step();
      if (!piece.empty() && on_text && on_text(piece)) {
        finish_early();
        return;
      }
    }
  } catch (...) {
    finish_early();  // never leave the model locked behind an error
    throw;
  }
}

void Generator::finish_early() {
  if (finished_) return;
  take_final_text(true);  // what was held back for stop strings is part of the text
  finish("abort");
}

}  // namespace bitnet::model
