// LayerNorm with weight and bias (torch.nn.LayerNorm), forward and backward.
// Row statistics in double: rows are short (<= a few thousand) and the
// analyzer's pre-norm activations can carry a large common offset.
#include <cmath>

#include "kernels/ops.h"

namespace dg {

void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b,
                       int64_t T, int64_t d, float eps) {
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x + t * d;
    double s = 0;
    for (int64_t i = 0; i < d; ++i) s += xt[i];
    const double mu = s / double(d);
    double v = 0;
    for (int64_t i = 0; i < d; ++i) v += (xt[i] - mu) * (xt[i] - mu);
    const float r = float(1.0 / std::sqrt(v / double(d) + double(eps)));
    const float m = float(mu);
    float* yt = y + t * d;
    for (int64_t i = 0; i < d; ++i) yt[i] = (xt[i] - m) * r * w[i] + b[i];
    mean[t] = m;
    rstd[t] = r;
  }
}

void layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* mean,
                        const float* rstd, const float* w, int64_t T, int64_t d) {
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x + t * d;
    const float* gt = dy + t * d;
    const float m = mean[t], r = rstd[t];
    double g_mean = 0, gn_mean = 0;
    for (int64_t i = 0; i < d; ++i) {
      const float n = (xt[i] - m) * r;
      const float g = gt[i] * w[i];
      g_mean += g;
      gn_mean += double(g) * n;
      if (db) db[i] += gt[i];
      if (dw) dw[i] += gt[i] * n;
    }
    if (!dx) continue;
    const float a = float(g_mean / double(d)), c = float(gn_mean / double(d));
    float* dxt = dx + t * d;
    for (int64_t i = 0; i < d; ++i) {
      const float n = (xt[i] - m) * r;
      dxt[i] += r * (gt[i] * w[i] - a - n * c);
    }
  }
}

}  // namespace dg
