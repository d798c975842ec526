// AdamW (Loshchilov & Hutter), exactly as torch.optim.AdamW computes it, plus the
// reductions gradient clipping needs. Used by every trainer: the guard's modules,
// LoRA factors and full-parameter training.
#pragma once
#include <cstdint>

#include "core/thread_pool.h"

namespace dg {

struct AdamWConfig {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.01f;
};

// One update of n parameters; `step` is the 1-based count of updates so far,
// including this one (bias correction uses beta^step). In place on p, m, v:
//   p -= lr * wd * p
//   m  = b1 m + (1 - b1) g
//   v  = b2 v + (1 - b2) g^2
//   p -= lr * (m / (1 - b1^step)) / (sqrt(v / (1 - b2^step)) + eps)
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWConfig& cfg, int64_t step,
                  ThreadPool& pool);

// sum_i x[i]^2 in float64 (a gradient norm must not lose small terms beside
// large ones); split across the pool, partial sums combined in a fixed order so
// the result does not depend on the thread count.
double sum_squares_f64(const float* x, int64_t n, ThreadPool& pool);

// x *= s (gradient clipping).
void scale_inplace(float* x, int64_t n, float s, ThreadPool& pool);

}  // namespace dg
