// RMSNorm, as Llama/Qwen2 use it: y = x / sqrt(mean(x^2) + eps) * w.
#include <cmath>

#include "kernels/ops.h"

namespace dg {

// Sum of squares with 8 independent partial sums, so the compiler can keep
// them in one vector register (a single f32 accumulator would serialize).
static float sum_squares(const float* x, int64_t d) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= d; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += x[i + j] * x[i + j];
  for (; i < d; ++i) acc[0] += x[i] * x[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

void rmsnorm_forward(float* y, const float* x, const float* w, int64_t T, int64_t d, float eps) {
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x + t * d;
    float* yt = y + t * d;
    const float r = 1.f / std::sqrt(sum_squares(xt, d) / float(d) + eps);
    for (int64_t i = 0; i < d; ++i) yt[i] = xt[i] * r * w[i];
  }
}

void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, int64_t T, int64_t d,
                      float eps) {
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x + t * d;
    const float* gt = dy + t * d;
    const float r = 1.f / std::sqrt(sum_squares(xt, d) / float(d) + eps);
    // dot = sum_i dy_i w_i x_i; dx_i = r (w_i dy_i) - x_i r^3 dot / d.
    float dot = 0.f;
    for (int64_t i = 0; i < d; ++i) dot += gt[i] * w[i] * xt[i];
    const float c = dot * r * r * r / float(d);
    float* dxt = dx + t * d;
    for (int64_t i = 0; i < d; ++i) dxt[i] += r * w[i] * gt[i] - c * xt[i];
    if (dw)
      for (int64_t i = 0; i < d; ++i) dw[i] += gt[i] * xt[i] * r;
  }
}

}  // namespace dg
