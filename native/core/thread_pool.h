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

// Marks the calling thread as an engine compute thread: on Linux 6.12+ (EEVDF)
// it asks for a long time slice (kEngineSliceNs), so a thread of the host
// application that wakes up (Node's event loop, libuv's file and DNS workers)
// gets an earlier virtual deadline and preempts the engine at once instead of
// waiting out the engine's slice. The CPU share is unchanged (same nice value).
// Older kernels and other systems ignore it.
void mark_engine_thread();

}  // namespace dg
