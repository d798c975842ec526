#include "train/adamw.h"

#include <cmath>
#include <vector>

namespace dg {

// Parameters per chunk: big enough to amortize a pool dispatch, small enough
// that two threads share a million-element embedding.
static constexpr int64_t kGrain = 1 << 14;

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWConfig& cfg, int64_t step,
                  ThreadPool& pool) {
  const float b1 = cfg.beta1, b2 = cfg.beta2;
  // Bias corrections in double, as PyTorch computes them on the host.
  const float c1 = float(1.0 / (1.0 - std::pow(double(b1), double(step))));
  const float c2 = float(1.0 / (1.0 - std::pow(double(b2), double(step))));
  const float decay = 1.f - cfg.lr * cfg.weight_decay;
  pool.parallel_for(
      n,
      [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const float gi = g[i];
          const float mi = b1 * m[i] + (1.f - b1) * gi;
          const float vi = b2 * v[i] + (1.f - b2) * gi * gi;
          m[i] = mi;
          v[i] = vi;
          p[i] = p[i] * decay - cfg.lr * (mi * c1) / (std::sqrt(vi * c2) + cfg.eps);
        }
      },
      kGrain);
}

double sum_squares_f64(const float* x, int64_t n, ThreadPool& pool) {
  const int64_t chunks = (n + kGrain - 1) / kGrain;
  std::vector<double> partial(size_t(chunks > 0 ? chunks : 0), 0.0);
  pool.parallel_for(
      chunks,
      [&](int64_t begin, int64_t end) {
        for (int64_t c = begin; c < end; ++c) {
          double acc = 0;
          const int64_t hi = std::min(n, (c + 1) * kGrain);
          for (int64_t i = c * kGrain; i < hi; ++i) acc += double(x[i]) * double(x[i]);
          partial[size_t(c)] = acc;
        }
      },
      1);
  double total = 0;
  for (double s : partial) total += s;
  return total;
}

void scale_inplace(float* x, int64_t n, float s, ThreadPool& pool) {
  pool.parallel_for(
      n,
      [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) x[i] *= s;
      },
      kGrain);
}

}  // namespace dg
