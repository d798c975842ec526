#include "core/bandwidth.h"

#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <vector>

#include "core/cpu_features.h"
#include "core/tensor.h"
#include "core/thread_pool.h"

namespace dg {

namespace detail {
float stream_sum_avx512(const float* p, int64_t n);
}  // namespace detail

namespace {

// A buffer in huge pages where the kernel allows, as the model's weights are
// (quantized ones always; mapped checkpoints where the file system allows):
// with 4 KiB pages the same loop reads up to ~10% slower here.
struct HugeFloats {
  float* p = nullptr;
  size_t bytes = 0;
  explicit HugeFloats(int64_t n) : bytes((size_t(n) * sizeof(float) + (size_t(2) << 20) - 1) / (size_t(2) << 20) * (size_t(2) << 20)) {
    void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw Error("ERR_OUT_OF_MEMORY", "measure_bandwidth: cannot map " + std::to_string(bytes) + " bytes");
#ifdef MADV_HUGEPAGE
    madvise(m, bytes, MADV_HUGEPAGE);
#endif
    p = static_cast<float*>(m);
  }
  ~HugeFloats() { munmap(p, bytes); }
  HugeFloats(const HugeFloats&) = delete;
  HugeFloats& operator=(const HugeFloats&) = delete;
};

}  // namespace

BandwidthResult measure_bandwidth(uint64_t bytes, int repeats) {
  const int64_t n = int64_t(bytes / sizeof(float)) / 64 * 64;
  HugeFloats src_buf(n), dst_buf(n);
  float *src = src_buf.p, *dst = dst_buf.p;
  std::fill(src, src + n, 1.0f);
  std::fill(dst, dst + n, 0.0f);
#if defined(DG_X86)
  const bool avx512 = active_isa() == Isa::Avx512;
#else
  const bool avx512 = false;
#endif
  ThreadPool& pool = ThreadPool::global();
  const int64_t grain = 1 << 16;
  auto seconds = [](auto t0) { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };

  std::vector<double> read_s, copy_s;
  std::mutex sum_mutex;
  double total = 0;  // consumed below so the reads cannot be optimized away
  for (int r = 0; r < std::max(1, repeats); ++r) {
    auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(n / 64, [&](int64_t b, int64_t e) {
      float s = 0;
      if (avx512) {
        s = detail::stream_sum_avx512(src + 64 * b, 64 * (e - b));
      } else {
        // Eight independent accumulators so the loop is bound by loads, not adds.
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int64_t i = 64 * b; i < 64 * e; i += 8)
          for (int k = 0; k < 8; ++k) acc[k] += src[i + k];
        for (float a : acc) s += a;
      }
      std::lock_guard<std::mutex> lock(sum_mutex);
      total += s;
    }, grain / 64);
    read_s.push_back(seconds(t0));
    t0 = std::chrono::steady_clock::now();
    pool.parallel_for(n, [&](int64_t b, int64_t e) {
      std::memcpy(dst + b, src + b, size_t(e - b) * sizeof(float));
    }, grain);
    copy_s.push_back(seconds(t0));
  }
  volatile double sink = total + dst[n / 2];
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
