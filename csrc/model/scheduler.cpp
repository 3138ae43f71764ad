#include "model/scheduler.h"

#include <algorithm>
#include <chrono>

#include "errors.h"
#include "kernels/thread_pool.h"

namespace bitnet::model {

namespace {

using Clock = std::chrono::steady_clock;

// Prompt tokens per batch for Model::logits, whose every token's logits are kept (a bound on
// the batch's logits buffer).
constexpr int kAllLogitsChunk = 64;

size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b, size_t limit) {
  size_t n = 0;
  limit = std::min({limit, a.size(), b.size()});
  while (n < limit && a[n] == b[n]) ++n;
  return n;
}

}  // namespace

Scheduler::Scheduler(engine::Engine& engine, const Vocab& vocab)
    : engine_(engine), vocab_(vocab), slots_(static_cast<size_t>(engine.n_seq())) {
  free_slots_.store(engine.n_seq());
  engine_.set_interrupt_check([this] { return interrupt_batch(); });
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  engine_.request_abort();
  thread_.join();
  engine_.set_interrupt_check(nullptr);
  engine_.reset_abort();
}

void Scheduler::submit(std::shared_ptr<Sequence> seq) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) throw EngineError("this model is shutting down");
    seq->submitted = Clock::now();
    queue_.push_back(std::move(seq));
    if (free_slots_.load() > 0) arrivals_.store(true);
  }
  cv_.notify_all();
}

void Scheduler::cancel(const std::shared_ptr<Sequence>& seq) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find(queue_.begin(), queue_.end(), seq);
  if (it != queue_.end()) {
    queue_.erase(it);
    seq->finish("abort");  // never admitted: the scheduler thread does not know it
    return;
  }
  seq->cancel();
}

void Scheduler::cancel_all() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& seq : queue_) seq->finish("abort");
  queue_.clear();
  for (auto& seq : admitted_) seq->cancel();
  engine_.request_abort();
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  SchedulerStats out = stats_;
  out.queued = static_cast<int>(queue_.size());
  out.active = static_cast<int>(admitted_.size());
  return out;
}

bool Scheduler::admit(Sequence& seq) {
  int best_free = -1, best_busy = -1;
  size_t free_len = 0, busy_len = 0;
  const std::vector<int32_t>& prompt = seq.prompt();
  // The prompt's last token is always evaluated again, for its logits; Model::logits reuses nothing.
  const size_t limit = seq.all_logits() ? 0 : prompt.size() - 1;
  for (size_t s = 0; s < slots_.size(); ++s) {
    const Slot& slot = slots_[s];
    const size_t n = common_prefix(slot.tokens, prompt, limit);
    if (slot.busy) {
      if (best_busy < 0 || n > busy_len) best_busy = static_cast<int>(s), busy_len = n;
    } else if (best_free < 0 || n > free_len || (n == free_len && slot.last_used < slots_[best_free].last_used)) {
      // The longest match; among equals the slot idle longest, keeping recent prompts cached.
      best_free = static_cast<int>(s), free_len = n;
    }
  }
  if (best_free < 0) return false;
  Slot& slot = slots_[best_free];
  size_t keep = free_len;
  {
    std::lock_guard<std::mutex> lock(engine_mu_);
    if (best_busy >= 0 && busy_len > free_len) {
      engine_.copy_cache(best_busy, best_free, static_cast<int>(busy_len));
      slot.tokens.assign(prompt.begin(), prompt.begin() + static_cast<std::ptrdiff_t>(busy_len));
      keep = busy_len;
      stats_.copied_tokens += static_cast<int64_t>(keep);
    } else {
      engine_.trim_cache(best_free, static_cast<int>(keep));
      slot.tokens.resize(keep);
    }
  }
  slot.busy = true;
  free_slots_.fetch_sub(1);
  seq.slot = best_free;
  seq.n_past = static_cast<int>(keep);
  seq.n_prompt_evaluated = static_cast<int>(prompt.size() - keep);
  stats_.reused_tokens += static_cast<int64_t>(keep);
  return true;
}

void Scheduler::release(Sequence& seq) {
  if (seq.slot < 0) return;
  Slot& slot = slots_[seq.slot];
  slot.busy = false;
  slot.last_used = ++clock_;
  seq.slot = -1;
  free_slots_.fetch_add(1);
}

void Scheduler::loop() {
  auto finished = [](const std::shared_ptr<Sequence>& seq) { return seq->done(); };
  for (;;) {
    // Let finished sequences go first: their slots, and the prompts cached there, are free for
    // the newcomers admitted next.
    for (auto& seq : active_) {
      if (seq->cancelled()) seq->finish("abort");
      if (seq->done()) release(*seq);
    }
    active_.erase(std::remove_if(active_.begin(), active_.end(), finished), active_.end());
    {
      std::unique_lock<std::mutex> lock(mu_);
      admitted_.erase(std::remove_if(admitted_.begin(), admitted_.end(), finished), admitted_.end());
      cv_.wait(lock, [&] { return stop_ || !queue_.empty() || !active_.empty(); });
      if (stop_) break;
      arrivals_.store(false);
      while (!queue_.empty()) {
        std::shared_ptr<Sequence> seq = queue_.front();
        try {
          if (!admit(*seq)) break;
        } catch (...) {  // never out of this thread: that would terminate the process
          queue_.pop_front();
          seq->fail(std::current_exception());
          continue;
        }
        active_.push_back(seq);
        admitted_.push_back(seq);
        queue_.pop_front();
      }
    }
    if (active_.empty()) continue;
    try {
      run_step();
    } catch (...) {  // e.g. bad_alloc sizing a batch: its sequences fail, the model stays usable
      for (auto& seq : active_) {
        if (!seq->done()) seq->fail(std::current_exception());
      }
    }
  }
  // Shutting down: nothing more runs.
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& seq : queue_) seq->finish("abort");
  for (auto& seq : active_) seq->finish("abort");
  queue_.clear();
  active_.clear();
  admitted_.clear();
}

void Scheduler::run_step() {
  batch_.clear();
  parts_.clear();
  int budget = engine_.n_batch();
  // The next token of every generating sequence, then chunks of prompts.
  int n_prefilling = 0;
  for (auto& seq : active_) {
    if (seq->prefilling()) {
      ++n_prefilling;
    } else if (seq->pending_token >= 0 && budget > 0) {
      parts_.push_back({seq.get(), static_cast<int>(batch_.size()), 1});
      batch_.push_back({seq->pending_token, seq->n_past, seq->slot, true});
      --budget;
    }
  }
  const bool shared = !parts_.empty() || n_prefilling > 1 || arrivals_.load();
  batch_prefill_tokens_ = 0;
  // While others run, prompts with at most kShortPrompt tokens left are read whole, the
  // shortest first, as many as fit kSharedPrefillBudget tokens (at least one), and no other
  // prompt joins that batch: a newcomer's first token comes one batch after it arrived. Without
  // such prompts, each longer one takes kSharedPrefillChunk tokens.
  auto left = [](const Sequence& seq) { return static_cast<int>(seq.prompt().size()) - seq.n_past; };
  whole_.clear();
  if (shared) {
    for (auto& seq : active_) {
      if (seq->prefilling() && !seq->all_logits() && left(*seq) <= kShortPrompt) whole_.push_back(seq.get());
    }
    std::stable_sort(whole_.begin(), whole_.end(), [&](Sequence* a, Sequence* b) { return left(*a) < left(*b); });
    int used = 0;
    size_t taken = 0;
    for (; taken < whole_.size(); ++taken) {
      if (taken > 0 && used + left(*whole_[taken]) > kSharedPrefillBudget) break;
      used += left(*whole_[taken]);
    }
    whole_.resize(taken);
  }
  for (auto& seq : active_) {
    if (!seq->prefilling() || budget == 0) continue;
    if (!whole_.empty() && std::find(whole_.begin(), whole_.end(), seq.get()) == whole_.end()) continue;
    const std::vector<int32_t>& prompt = seq->prompt();
    int n = std::min(left(*seq), budget);
    if (shared && whole_.empty()) n = std::min(n, kSharedPrefillChunk);
    if (seq->all_logits()) n = std::min(n, kAllLogitsChunk);
    if (!seq->started) {
      seq->started = true;
      seq->prompt_started = Clock::now();
    }
    parts_.push_back({seq.get(), static_cast<int>(batch_.size()), n});
    for (int i = 0; i < n; ++i) {
      const int pos = seq->n_past + i;
      const bool last = pos + 1 == static_cast<int>(prompt.size());
      batch_.push_back({prompt[pos], pos, seq->slot, seq->all_logits() || last});
    }
    budget -= n;
    batch_prefill_tokens_ += n;
  }
  if (batch_.empty()) return;
  int n_out = 0;
  for (const auto& t : batch_) n_out += t.logits ? 1 : 0;
  const size_t n_vocab = static_cast<size_t>(engine_.n_vocab());
  logits_.resize(static_cast<size_t>(n_out) * n_vocab);

  const auto t0 = Clock::now();
  bool ok = false;
  try {
    std::lock_guard<std::mutex> lock(engine_mu_);
    engine_.reset_abort();
    ok = engine_.decode_batch(batch_.data(), static_cast<int>(batch_.size()), logits_.data());
  } catch (...) {
    for (const Part& part : parts_) {
      slots_[part.seq->slot].tokens.resize(static_cast<size_t>(part.seq->n_past));
      part.seq->fail(std::current_exception());
    }
    return;
  }
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.batches;
    stats_.batch_tokens += static_cast<int64_t>(batch_.size());
    stats_.max_active = std::max(stats_.max_active, static_cast<int>(parts_.size()));
    if (!ok) ++stats_.aborted_batches;
  }
  if (!ok) return;  // nothing advanced: the next batch starts from the same positions

  size_t row = 0;
  sampling_.clear();
  for (const Part& part : parts_) {
    Sequence& seq = *part.seq;
    Slot& slot = slots_[seq.slot];
    const bool decoding = !seq.prefilling();
    const float* last_logits = nullptr;
    for (int i = part.first; i < part.first + part.count; ++i) {
      slot.tokens.push_back(batch_[i].token);
      if (!batch_[i].logits) continue;
      last_logits = logits_.data() + row * n_vocab;
      if (seq.all_logits()) seq.store_prompt_logits(batch_[i].pos, last_logits);
      ++row;
    }
    seq.n_past += part.count;
    if (decoding) {
      seq.generation_ms += ms;
      ++seq.n_generation_decodes;
    }
    if (last_logits != nullptr && !seq.prefilling()) sampling_.push_back({&seq, last_logits});
  }
  // Each sequence samples from its own logits with its own sampler chain: in parallel on the
  // engine's threads (idle until the next batch), each sequence on one thread, so the result
  // does not depend on how they are spread.
  auto sample = [&](int i) {
    Sequence& seq = *sampling_[i].first;
    try {
      seq.on_logits(sampling_[i].second);
    } catch (...) {
      seq.fail(std::current_exception());
    }
  };
  const int n = static_cast<int>(sampling_.size());
  const int threads = std::min(n, engine_.n_threads());
  if (threads > 1) {
    kernels::ThreadPool::instance().run(n, threads, sample);
  } else {
    for (int i = 0; i < n; ++i) sample(i);
  }
}

bool Scheduler::interrupt_batch() const {
  // A new request waits while a long prompt chunk runs: stop it, and let the next batch take
  // the newcomer's prompt with a smaller chunk.
  if (arrivals_.load(std::memory_order_relaxed) && batch_prefill_tokens_ > kSharedPrefillChunk) return true;
  for (const Part& part : parts_) {
    if (!part.seq->cancelled()) return false;
  }
  return !parts_.empty();
}

}  // namespace bitnet::model
