#include "kernels/thread_pool.h"

namespace bitnet::kernels {

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
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return job_id_ != seen && index < n_helpers_; });
      seen = job_id_;
    }
    drain();
    std::lock_guard<std::mutex> lock(mutex_);
    if (--helpers_running_ == 0) done_.notify_one();
  }
}

void ThreadPool::run(int n_tasks, int n_threads, const std::function<void(int)>& task) {
  const int helpers = std::max(0, std::min(n_threads, n_tasks) - 1);
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
    n_helpers_ = helpers;
    helpers_running_ = helpers;
    next_.store(0);
    ++job_id_;
  }
  wake_.notify_all();
  drain();
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [&] { return helpers_running_ == 0; });
  task_ = nullptr;
}

}  // namespace bitnet::kernels
