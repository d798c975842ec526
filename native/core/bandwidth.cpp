#include "core/bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <vector>

#include "core/thread_pool.h"

namespace dg {

BandwidthResult measure_bandwidth(uint64_t bytes, int repeats) {
  const int64_t n = int64_t(bytes / sizeof(float));
  std::vector<float> src(static_cast<size_t>(n), 1.0f), dst(static_cast<size_t>(n));
  ThreadPool& pool = ThreadPool::global();
  const int64_t grain = 1 << 16;
  auto seconds = [](auto t0) { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };

  std::vector<double> read_s, copy_s;
  std::mutex sum_mutex;
  double total = 0;  // consumed below so the reads cannot be optimized away
  for (int r = 0; r < std::max(1, repeats); ++r) {
    auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(n, [&](int64_t b, int64_t e) {
      // Eight independent accumulators so the loop is bound by loads, not adds.
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t i = b;
      for (; i + 8 <= e; i += 8)
        for (int k = 0; k < 8; ++k) acc[k] += src[size_t(i + k)];
      for (; i < e; ++i) acc[0] += src[size_t(i)];
      float s = 0;
      for (float a : acc) s += a;
      std::lock_guard<std::mutex> lock(sum_mutex);
      total += s;
    }, grain);
    read_s.push_back(seconds(t0));
    t0 = std::chrono::steady_clock::now();
    pool.parallel_for(n, [&](int64_t b, int64_t e) {
      std::memcpy(&dst[size_t(b)], &src[size_t(b)], size_t(e - b) * sizeof(float));
    }, grain);
    copy_s.push_back(seconds(t0));
  }
  volatile double sink = total + dst[size_t(n / 2)];
  (void)sink;
  // Medians: decode speed is an average over many tokens, so the bound it is
  // compared with should be typical bandwidth, not the luckiest run.
  auto median = [](std::vector<double>& v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  return {double(bytes) / median(read_s) / 1e9, 2.0 * double(bytes) / median(copy_s) / 1e9};
}

}  // namespace dg
