// A persistent pool of worker threads for the kernels (starting threads per call costs more
// than a whole GEMV).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace bitnet::kernels {

class ThreadPool {
 public:
  // The process-wide pool (never destroyed: its idle threads end with the process).
  static ThreadPool& instance();

  // Runs task(i) for every i in [0, n_tasks) on up to n_threads threads, the caller included,
  // and returns when all are done. Calls from several threads take turns.
  void run(int n_tasks, int n_threads, const std::function<void(int)>& task);

 private:
  ThreadPool() = default;
  void worker_loop(int index);
  void drain();

  std::mutex run_mutex_;  // one job at a time
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* task_ = nullptr;
  int n_tasks_ = 0;
  int n_helpers_ = 0;          // workers taking part in the current job
  int helpers_running_ = 0;
  uint64_t job_id_ = 0;
  std::atomic<int> next_{0};
};

}  // namespace bitnet::kernels
