// Persistent pool tuned for many short calls: decode dispatches ~100 kernels per
// token, so workers spin briefly on a generation counter before sleeping on a
// condition variable, and chunks are claimed with one atomic per chunk.
#include "core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define DG_CPU_RELAX() _mm_pause()
#else
#define DG_CPU_RELAX() std::this_thread::yield()
#endif

namespace dg {
namespace {

// Set on pool workers for their lifetime and on a caller while it runs chunks,
// so a nested parallel_for runs inline instead of deadlocking on call_mutex.
thread_local bool t_inside_pool = false;

// How long an idle worker keeps spinning before it sleeps: long enough to span
// the serial work between two kernels of a decode step, short enough not to
// burn a core when the model is idle.
constexpr auto kSpin = std::chrono::microseconds(300);
// Chunks a parallel_for hands out per thread (see parallel_for).
constexpr int64_t kChunksPerThread = 1;

int threads_from_env() {
  if (const char* s = std::getenv("DEEPGUARD_THREADS")) {
    char* end = nullptr;
    long n = std::strtol(s, &end, 10);
    if (end != s && *end == '\0' && n >= 1 && n <= 1024) return int(n);
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : int(hw);
}

}  // namespace

struct ThreadPool::Impl {
  int n_threads = 1;
  std::vector<std::thread> workers;
  std::mutex call_mutex;  // one parallel_for at a time

  // The current job. Written by the caller before `claim` publishes it.
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0, n_chunks = 0;
  // High 32 bits: job generation; low 32 bits: chunks not yet handed out.
  // Tagging the counter with the generation keeps a worker that wakes late from
  // claiming a chunk of a newer job; the job fields are read only after a
  // successful claim, when the caller cannot be rewriting them.
  std::atomic<uint64_t> claim{0};
  std::atomic<int64_t> done{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;

  std::atomic<uint32_t> generation{0};
  std::mutex sleep_mutex;
  std::condition_variable wake;
  std::atomic<bool> stop{false};

  // Runs chunks of job `gen` until none are left.
  void run_chunks(uint32_t gen) {
    uint64_t c = claim.load(std::memory_order_acquire);
    for (;;) {
      if (uint32_t(c >> 32) != gen || (c & 0xffffffffu) == 0) return;
      if (!claim.compare_exchange_weak(c, c - 1, std::memory_order_acq_rel)) continue;
      int64_t i = n_chunks - int64_t(c & 0xffffffffu);
      if (!failed.load(std::memory_order_relaxed)) {
        try {
          (*fn)(i * n / n_chunks, (i + 1) * n / n_chunks);
        } catch (...) {
          std::lock_guard<std::mutex> lk(error_mutex);
          if (!error) error = std::current_exception();
          failed.store(true, std::memory_order_relaxed);
        }
      }
      done.fetch_add(1, std::memory_order_release);
      c = claim.load(std::memory_order_acquire);
    }
  }

  void worker_loop() {
    t_inside_pool = true;
    uint32_t seen = 0;
    for (;;) {
      auto spin_until = std::chrono::steady_clock::now() + kSpin;
      while (generation.load(std::memory_order_acquire) == seen) {
        DG_CPU_RELAX();
        if (std::chrono::steady_clock::now() > spin_until) {
          std::unique_lock<std::mutex> lk(sleep_mutex);
          wake.wait(lk, [&] { return stop || generation.load(std::memory_order_acquire) != seen; });
          break;
        }
      }
      if (stop.load()) return;
      seen = generation.load(std::memory_order_acquire);
      run_chunks(seen);
    }
  }
};

ThreadPool::ThreadPool(int n_threads) : impl_(new Impl) {
  impl_->n_threads = n_threads < 1 ? 1 : n_threads;
  for (int i = 1; i < impl_->n_threads; ++i) impl_->workers.emplace_back([this] { impl_->worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(impl_->sleep_mutex);
    impl_->stop = true;
    impl_->generation.fetch_add(1);
  }
  impl_->wake.notify_all();
  for (auto& t : impl_->workers) t.join();
  delete impl_;
}

int ThreadPool::size() const { return impl_->n_threads; }

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  // floor(n / grain) chunks, so every chunk has at least `grain` items, and up
  // to kChunksPerThread per thread, claimed dynamically. Smaller chunks let the
  // other threads take over when one loses its core on a shared host, but they
  // cut each thread's weight stream into pieces: 8 per thread made BF16 decode
  // ~12% slower on a quiet machine (90-98 -> 81-84 tok/s, 100M bench model), so
  // one contiguous chunk per thread it is.
  int64_t n_chunks = std::min<int64_t>(n / grain, int64_t(impl_->n_threads) * kChunksPerThread);
  if (n_chunks <= 1 || t_inside_pool || impl_->n_threads == 1) {
    fn(0, n);
    return;
  }
  Impl& s = *impl_;
  std::lock_guard<std::mutex> call(s.call_mutex);
  s.fn = &fn;
  s.n = n;
  s.n_chunks = n_chunks;
  s.done.store(0, std::memory_order_relaxed);
  s.failed.store(false, std::memory_order_relaxed);
  s.error = nullptr;
  uint32_t gen = s.generation.load(std::memory_order_relaxed) + 1;
  s.claim.store(uint64_t(gen) << 32 | uint64_t(n_chunks), std::memory_order_release);
  {
    // Publishing under the mutex means a worker that is about to sleep either
    // sees the new generation in its wait predicate or gets the notify.
    std::lock_guard<std::mutex> lk(s.sleep_mutex);
    s.generation.store(gen, std::memory_order_release);
  }
  s.wake.notify_all();

  t_inside_pool = true;
  s.run_chunks(gen);
  t_inside_pool = false;
  // Chunks claimed by workers may still be running; they are short.
  for (int spins = 0; s.done.load(std::memory_order_acquire) < n_chunks; ++spins) {
    if (spins < 4096) DG_CPU_RELAX(); else std::this_thread::yield();
  }
  if (s.error) std::rethrow_exception(s.error);
}

ThreadPool& ThreadPool::global() {
  // Deliberately never destroyed: joining workers from static destructors at
  // process exit (e.g. while Node tears down) can deadlock or race.
  static ThreadPool* pool = new ThreadPool(threads_from_env());
  return *pool;
}

}  // namespace dg
