// A small persistent thread pool for data-parallel kernels.
#pragma once
#include <cstdint>
#include <functional>

namespace dg {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const;

  // Runs fn(begin, end) over [0, n) in contiguous chunks of at least `grain`
  // items, the calling thread taking part; returns when every chunk is done.
  // Concurrent callers are serialized; a call from inside a worker runs inline.
  // The first exception thrown by fn is rethrown in the caller.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

  // Process-wide pool sized from DEEPGUARD_THREADS or the number of cores.
  static ThreadPool& global();

 private:
  struct Impl;
  Impl* impl_;
};

}  // namespace dg
