#include "model/sequence.h"

#include <algorithm>
#include <cmath>
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
    sampler_ = std::make_unique<Sampler>(params_, vocab_, n_vocab_, prompt_);
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

std::vector<TokenLogprob> Sequence::take_logprobs() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<TokenLogprob> out = std::move(ready_logprobs_);
  ready_logprobs_.clear();
  return out;
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
  // Sampling is part of a token's time (a grammar or logprobs can make it a visible part).
  const Clock::time_point t0 = Clock::now();
  const int32_t token = sampler_->sample(logits);
  if (params_.logprobs >= 0 && !vocab_.is_end_of_generation(token)) record_logprobs(logits, token);
  generation_ms += std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  if (vocab_.is_end_of_generation(token)) return finish("stop");
  tokens_.push_back(token);
  const std::string bytes = vocab_.token_bytes(token, false);
  generated_bytes_ += bytes.size();
  pending_bytes_ += bytes;
  take_final_text(false);
  if (done_) return;  // a stop string
  // The next token needs a free position for itself.
  if (static_cast<int>(tokens_.size()) >= params_.max_tokens || n_past + 1 >= n_ctx_) return finish("length");
  pending_token = token;
}

void Sequence::record_logprobs(const float* logits, int32_t token) {
  // log_softmax(logits)[i] = logits[i] - max - log(sum(exp(logits - max))), in double.
  float max = logits[0];
  for (int i = 1; i < n_vocab_; ++i) max = std::max(max, logits[i]);
  double sum = 0.0;
  for (int i = 0; i < n_vocab_; ++i) sum += std::exp(static_cast<double>(logits[i] - max));
  const double log_z = static_cast<double>(max) + std::log(sum);
  auto logprob = [&](int32_t t) { return static_cast<float>(static_cast<double>(logits[t]) - log_z); };
  TokenLogprob entry;
  entry.token = token;
  entry.logprob = logprob(token);
  entry.offset = generated_bytes_;
  const int k = std::min(params_.logprobs, n_vocab_);
  if (k > 0) {
    std::vector<int32_t> ids(static_cast<size_t>(n_vocab_));
    for (int i = 0; i < n_vocab_; ++i) ids[static_cast<size_t>(i)] = i;
    // Highest logit first; equal logits by token id, so the list does not depend on the sort.
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    entry.top.reserve(static_cast<size_t>(k));
    for (int i = 0; i < k; ++i) entry.top.emplace_back(ids[static_cast<size_t>(i)], logprob(ids[static_cast<size_t>(i)]));
  }
  logprobs_.push_back(std::move(entry));
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
    publish(std::move(out), "stop", /*cut=*/true);
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

void Sequence::publish(std::string piece, const char* finish_reason, bool cut) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    final_text_ += piece;
    ready_ += piece;
    // A token's entry goes out with the first text of its bytes; at the end, every entry but
    // those of tokens a stop string cut off.
    const bool all = finish_reason != nullptr && !cut;
    while (logprobs_published_ < logprobs_.size() &&
           (all || logprobs_[logprobs_published_].offset < final_text_.size())) {
      ready_logprobs_.push_back(logprobs_[logprobs_published_]);
      stats_.logprobs.push_back(logprobs_[logprobs_published_]);
      ++logprobs_published_;
    }
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
