#include "model/sequence.h"

#include <algorithm>
#include <cstring>

#include "errors.h"
#include "model/utf8.h"

namespace bitnet::model {

Sequence::Sequence(std::vector<int32_t> prompt, SamplingParams params, const Vocab& vocab, int n_vocab, int n_ctx,
                   bool all_logits)
    : prompt_(std::move(prompt)),
      params_(std::move(params)),
      vocab_(vocab),
      n_vocab_(n_vocab),
      n_ctx_(n_ctx),
      all_logits_(all_logits),
      submitted(Clock::now()) {
  if (prompt_.empty()) throw InvalidArgument("the prompt is empty (no tokens)");
  if (static_cast<int64_t>(prompt_.size()) >= n_ctx_ && !all_logits_) {
    throw InvalidArgument("the prompt has " + std::to_string(prompt_.size()) +
                          " tokens, which does not fit the context of " + std::to_string(n_ctx_) +
                          " tokens (n_ctx) with room to generate; shorten the prompt or raise n_ctx");
  }
  if (static_cast<int64_t>(prompt_.size()) > n_ctx_) {
    throw InvalidArgument(std::to_string(prompt_.size()) + " tokens do not fit in the context of " +
                          std::to_string(n_ctx_) + " (n_ctx)");
  }
  for (int32_t t : prompt_) {
    if (t < 0 || t >= n_vocab_) {
      throw InvalidArgument("token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                            std::to_string(n_vocab_) + ")");
    }
  }
  if (params_.max_tokens < 0) throw InvalidArgument("max_tokens must be >= 0");
  for (const std::string& s : params_.stop) {
    if (s.empty()) throw InvalidArgument("stop strings must not be empty");
  }
  if (all_logits_) {
    prompt_logits_.resize(prompt_.size() * static_cast<size_t>(n_vocab_));
  } else {
    sampler_ = std::make_unique<Sampler>(params_, n_vocab_, prompt_);
  }
}

// ---- consumer side

std::string Sequence::wait_text(std::chrono::milliseconds timeout, bool* ended) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return !ready_.empty() || finished_; });
  std::string out = std::move(ready_);
  ready_.clear();
  *ended = finished_;
  return out;
}

bool Sequence::wait_finished(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return finished_; });
}

bool Sequence::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

GenerationStats Sequence::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

std::string Sequence::text() const {
  std::lock_guard<std::mutex> lock(mu_);
  return final_text_;
}

void Sequence::rethrow_error() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (error_) std::rethrow_exception(error_);
}

std::vector<float> Sequence::take_logits() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::move(prompt_logits_);
}

// ---- scheduler side

void Sequence::store_prompt_logits(int index, const float* logits) {
  std::memcpy(prompt_logits_.data() + static_cast<size_t>(index) * n_vocab_, logits, sizeof(float) * n_vocab_);
}

void Sequence::on_logits(const float* logits) {
  if (done_) return;
  if (!prompt_timed_) {
    prompt_timed_ = true;
    prompt_ms_ = std::chrono::duration<double, std::milli>(Clock::now() - prompt_started).count();
  }
  pending_token = -1;
  if (all_logits_ || static_cast<int>(tokens_.size()) >= params_.max_tokens) return finish("length");
  if (cancelled()) return finish("abort");
  const int32_t token = sampler_->sample(logits);
  if (vocab_.is_end_of_generation(token)) return finish("stop");
  tokens_.push_back(token);
  pending_bytes_ += vocab_.token_bytes(token, false);
  take_final_text(false);
  if (done_) return;  // a stop string
  // The next token needs a free position for itself.
  if (static_cast<int>(tokens_.size()) >= params_.max_tokens || n_past + 1 >= n_ctx_) return finish("length");
  pending_token = token;
}

void Sequence::take_final_text(bool flush) {
  held_ += take_utf8(&pending_bytes_, flush);
  // A complete stop string ends the text right before it.
  size_t stop_at = std::string::npos;
  for (const std::string& s : params_.stop) stop_at = std::min(stop_at, held_.find(s));
  if (stop_at != std::string::npos) {
    std::string out = held_.substr(0, stop_at);
    held_.clear();
    done_ = true;
    publish(std::move(out), "stop");
    return;
  }
  // Hold back a tail that could still grow into a stop string.
  size_t hold = 0;
  if (!flush) {
    for (const std::string& s : params_.stop) {
      for (size_t k = std::min(s.size() - 1, held_.size()); k > hold; --k) {
        if (held_.compare(held_.size() - k, k, s, 0, k) == 0) {
          hold = k;
          break;
        }
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - hold);
  held_.erase(0, held_.size() - hold);
  if (!out.empty()) publish(std::move(out), nullptr);
}

void Sequence::finish(const char* reason) {
  if (done_) return;
  take_final_text(true);  // what was held back for stop strings is part of the text
  if (done_) return;      // the flush completed a stop string
  done_ = true;
  publish(std::string(), reason);
}

void Sequence::fail(std::exception_ptr error) {
  if (done_) return;
  done_ = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = std::move(error);
  }
  publish(std::string(), "abort");
}

void Sequence::publish(std::string piece, const char* finish_reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    final_text_ += piece;
    ready_ += piece;
    if (finish_reason != nullptr) {
      finished_ = true;
      stats_.finish_reason = finish_reason;
      stats_.tokens = tokens_;
      stats_.n_prompt = static_cast<int>(prompt_.size());
      stats_.n_prompt_evaluated = n_prompt_evaluated;
      stats_.prompt_ms = prompt_ms_;
      stats_.generation_ms = generation_ms;
      stats_.n_generation_decodes = n_generation_decodes;
      stats_.queue_ms = started ? std::chrono::duration<double, std::milli>(prompt_started - submitted).count()
                                : std::chrono::duration<double, std::milli>(Clock::now() - submitted).count();
    }
  }
  cv_.notify_all();
}

}  // namespace bitnet::model
