// What a generation holds of its model: the model's lock, its engine, vocabulary and KV cache.
#pragma once

#include <atomic>
#include <mutex>
#include <thread>

#include "engine/engine.h"
#include "model/kv_cache.h"
#include "model/vocab.h"

namespace bitnet::model {

// Exclusive use of a model by one thread; remembers the owner so that re-entrant use from the
// same thread (a second call while a stream is open) is reported instead of deadlocking.
class ModelLease {
 public:
  ModelLease(std::mutex& mutex, std::atomic<std::thread::id>& owner);
  ModelLease(ModelLease&& other) noexcept = default;
  ~ModelLease() { release(); }
  void release();

 private:
  std::unique_lock<std::mutex> lock_;
  std::atomic<std::thread::id>* owner_;
};

// Handed by Model::start to a Generator: what it may use, and only while it holds the lease.
struct ModelSession {
  engine::Engine& engine;
  const Vocab& vocab;
  KvCache& cache;
  ModelLease lease;
};

}  // namespace bitnet::model
