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

  // After a job, workers poll for the next one this long before they sleep: waking a sleeping
  // thread costs tens of microseconds, as much as a whole GEMV of a 2560 x 2560 matrix.
  static constexpr int kSpinMicroseconds = 200;

 private:
  ThreadPool() = default;
  void worker_loop(int index);
  void drain();

  std::mutex run_mutex_;  // one job at a time
  std::mutex mutex_;      // guards the sleeps and wake-ups below
  std::condition_variable wake_;
  std::condition_variable done_;
  std::vector<std::thread> workers_;
  // The job, written before job_ changes (release) and read after a change is seen (acquire).
  const std::function<void(int)>* task_ = nullptr;
  int n_tasks_ = 0;
  // (job counter << 16) | workers taking part: one word, so that a worker left out of one job
  // never pairs that job with the next one's helper count.
  std::atomic<uint64_t> job_{0};
  std::atomic<int> helpers_running_{0};
  std::atomic<int> next_{0};
};

}  // namespace bitnet::kernels
