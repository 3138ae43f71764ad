#include "engine/packed_weights.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <iterator>
#include <mutex>

#include "errors.h"
#include "kernels/thread_pool.h"

namespace bitnet::engine {

std::shared_ptr<const PackedWeights> packed_weights(const std::string& path, const uint8_t* file_data,
                                                    const std::vector<ggml_tensor*>& tensors, const ggml_tensor* head,
                                                    int n_threads, const ReleaseFn& release) {
  // The file's identity: engines of this process on the same, unchanged file (Supervisor slots,
  // server --parallel) share one copy instead of holding one each.
  std::string key;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    key = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
          std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + (head ? ":head" : "");
  }
  static std::mutex mutex;  // held while repacking: a second engine on the file waits, then shares
  static std::map<std::string, std::weak_ptr<const PackedWeights>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  for (auto it = cache.begin(); it != cache.end();) {  // forget the files no engine holds any more
    it = it->second.expired() ? cache.erase(it) : std::next(it);
  }
  if (!key.empty()) {
    auto it = cache.find(key);
    // lock() can still come back empty: engines are destroyed without this mutex.
    if (it != cache.end()) {
      if (std::shared_ptr<const PackedWeights> hit = it->second.lock()) return hit;
    }
  }

  auto out = std::make_shared<PackedWeights>();
  std::vector<size_t> at;  // each tensor's place in the arena
  size_t total = 0;
  for (const ggml_tensor* t : tensors) {
    at.push_back(total);
    total += (static_cast<size_t>(t->ne[1] * t->ne[0] / 4) + 63) / 64 * 64;
  }
  const size_t head_at = total;
  if (head != nullptr) total += ggml_nbytes(head);
  constexpr size_t kHugePage = size_t{2} << 20;
  const size_t arena_bytes = (total + kHugePage - 1) / kHugePage * kHugePage;
  out->arena.reset(static_cast<uint8_t*>(std::aligned_alloc(kHugePage, arena_bytes)));
  if (!out->arena) {
    throw EngineError("out of memory: our kernels need " + std::to_string(arena_bytes >> 20) +
                      " MiB for the repacked ternary weights (kernels='ggml' runs without)");
  }
#ifdef MADV_HUGEPAGE
  ::madvise(out->arena.get(), arena_bytes, MADV_HUGEPAGE);  // advice: without it, 4 KiB pages
#endif
  for (size_t i = 0; i < tensors.size(); ++i) {
    const ggml_tensor* t = tensors[i];
    const int64_t rows = t->ne[1], k = t->ne[0], row_bytes = k / 4;
    const auto* src = static_cast<const uint8_t*>(t->data);
    const kernels::TernaryMatrix tq2{kernels::Layout::kTQ2, src, rows, k, static_cast<int64_t>(t->nb[1]), 0.0f};
    uint8_t* codes = out->arena.get() + at[i];
    PackedWeights::Matrix m;
    m.scales.resize(static_cast<size_t>(rows));
    std::atomic<bool> one_scale{true};
    constexpr int64_t kRowsPerTask = 256;
    const int n_tasks = static_cast<int>((rows + kRowsPerTask - 1) / kRowsPerTask);
    kernels::ThreadPool::instance().run(n_tasks, n_threads, [&](int task) {
      const int64_t blocks = k / kernels::kTq2Block;
      for (int64_t r = task * kRowsPerTask; r < std::min(rows, (task + 1) * kRowsPerTask); ++r) {
        const uint8_t* row = src + r * tq2.stride;
        for (int64_t b = 1; b < blocks; ++b) {
          if (std::memcmp(row + 64, row + b * kernels::kTq2BlockBytes + 64, 2) != 0) one_scale = false;
        }
        kernels::tq2_row_to_i2s(row, k, codes + r * row_bytes);
        m.scales[r] = kernels::row_scale(tq2, r);
      }
    });
    if (!one_scale) continue;
    m.matrix = kernels::TernaryMatrix{kernels::Layout::kI2S, codes, rows, k, row_bytes, 0.0f, nullptr};
    const size_t offset = static_cast<size_t>(src - file_data);
    PackedWeights::Matrix& kept = out->by_offset[offset] = std::move(m);
    kept.matrix.row_scales = kept.scales.data();
    release(src, ggml_nbytes(t));  // nothing reads them again
  }
  if (head != nullptr) {
    uint8_t* dst = out->arena.get() + head_at;
    const auto* src = static_cast<const uint8_t*>(head->data);
    const size_t n = ggml_nbytes(head), per_task = size_t{16} << 20;
    kernels::ThreadPool::instance().run(static_cast<int>((n + per_task - 1) / per_task), n_threads, [&](int i) {
      const size_t begin = i * per_task;
      const size_t bytes = std::min(per_task, n - begin);
      std::memcpy(dst + begin, src + begin, bytes);
      release(src + begin, bytes);  // read back from the file only if get_rows needs a row of it
    });
    out->head = dst;
  }
  if (!key.empty()) cache[key] = out;
  return out;
}

}  // namespace bitnet::engine
