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

}  // namespace

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

  sampler_ = std::make_unique<Sampler>(params_, session_.engine.n_vocab(), prompt_);
  logits_.resize(static_cast<size_t>(session_.engine.n_vocab()));
  session_.engine.reset_abort();
}

Generator::~Generator() {
  finish("abort");  // no-op when it already finished
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
  const int32_t token = sampler_->sample(logits_.data());
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
