#include "kernels/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define BITNET_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define BITNET_CPU_RELAX() asm volatile("yield")
#else
#define BITNET_CPU_RELAX() std::this_thread::yield()
#endif

namespace bitnet::kernels {

namespace {

// Polls `ready` for up to ThreadPool::kSpinMicroseconds; true when it became true meanwhile.
template <class Ready>
bool spin_until(Ready ready) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(ThreadPool::kSpinMicroseconds);
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
      BITNET_CPU_RELAX();
    }
    if (std::chrono::steady_clock::now() >= deadline) return ready();
  }
}

}  // namespace

ThreadPool& ThreadPool::instance() {
  static ThreadPool* pool = new ThreadPool();  // leaked on purpose, see the header
  return *pool;
}

void ThreadPool::drain() {
  for (int i = next_.fetch_add(1); i < n_tasks_; i = next_.fetch_add(1)) (*task_)(i);
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    auto new_job = [&] { return job_.load(std::memory_order_acquire) != seen; };
    if (!spin_until(new_job)) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, new_job);
    }
    seen = job_.load(std::memory_order_acquire);
    // Not needed for this job; otherwise the job cannot end (nor task_ change) before this
    // worker's part is done.
    if (index >= static_cast<int>(seen & 0xffff)) continue;
    drain();
    if (helpers_running_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mutex_);  // the caller may be between its check and its wait
      done_.notify_one();
    }
  }
}

void ThreadPool::run(int n_tasks, int n_threads, const std::function<void(int)>& task) {
  const int helpers = std::max(0, std::min({n_threads, n_tasks, 0x10000}) - 1);
  if (helpers == 0) {
    for (int i = 0; i < n_tasks; ++i) task(i);
    return;
  }
  std::lock_guard<std::mutex> one_job(run_mutex_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    while (static_cast<int>(workers_.size()) < helpers) {
      const int index = static_cast<int>(workers_.size());
      workers_.emplace_back([this, index] { worker_loop(index); });
    }
    task_ = &task;
    n_tasks_ = n_tasks;
    helpers_running_.store(helpers, std::memory_order_relaxed);
    next_.store(0, std::memory_order_relaxed);
    // Publishes the job; under the mutex so that no sleeper misses it.
    const uint64_t counter = (job_.load(std::memory_order_relaxed) >> 16) + 1;
    job_.store(counter << 16 | static_cast<uint64_t>(helpers), std::memory_order_release);
  }
  wake_.notify_all();
  drain();
  auto finished = [&] { return helpers_running_.load(std::memory_order_acquire) == 0; };
  if (!spin_until(finished)) {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, finished);
  }
  task_ = nullptr;
}

}  // namespace bitnet::kernels
