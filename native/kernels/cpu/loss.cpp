// Losses over the LM head's logits: next-token cross-entropy and KL(p_base || p).
#include <cmath>

#include "kernels/ops.h"

namespace dg {

static float row_logsumexp(const float* z, int64_t V) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < V; ++i) mx = z[i] > mx ? z[i] : mx;
  double s = 0.0;
  for (int64_t i = 0; i < V; ++i) s += std::exp(double(z[i] - mx));
  return mx + float(std::log(s));
}

double cross_entropy_forward(float* lse, const float* logits, const int32_t* targets, const float* weights, int64_t T,
                             int64_t V) {
  double total = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    const float* z = logits + t * V;
    lse[t] = row_logsumexp(z, V);
    if (targets[t] >= 0 && weights[t] != 0.f) total += double(weights[t]) * (double(lse[t]) - double(z[targets[t]]));
  }
  return total;
}

void cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                            const float* weights, int64_t T, int64_t V) {
  for (int64_t t = 0; t < T; ++t) {
    if (targets[t] < 0 || weights[t] == 0.f) continue;
    const float* z = logits + t * V;
    float* g = dlogits + t * V;
    const float w = weights[t];
    for (int64_t i = 0; i < V; ++i) g[i] += w * std::exp(z[i] - lse[t]);
    g[targets[t]] -= w;
  }
}

double cross_entropy_forward_backward(float* dlogits, const float* logits, const int32_t* targets, const float* weights,
                                      int64_t T, int64_t V) {
  double total = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    if (targets[t] < 0 || weights[t] == 0.f) continue;
    const float* z = logits + t * V;
    float* g = dlogits + t * V;
    float mx = -INFINITY;
    for (int64_t i = 0; i < V; ++i) mx = z[i] > mx ? z[i] : mx;
    double sum = 0.0;
    for (int64_t i = 0; i < V; ++i) sum += double(g[i] = std::exp(z[i] - mx));  // one exp per logit
    const double lse = double(mx) + std::log(sum);
    total += double(weights[t]) * (lse - double(z[targets[t]]));
    const float c = float(double(weights[t]) / sum);
    for (int64_t i = 0; i < V; ++i) g[i] *= c;
    g[targets[t]] -= weights[t];
  }
  return total;
}

double kl_forward_backward(float* dlogits, const float* base_logits, const float* logits, const float* weights,
                           int64_t T, int64_t V) {
  double total = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    if (weights[t] == 0.f) continue;
    const float* zb = base_logits + t * V;
    const float* z = logits + t * V;
    const float lb = row_logsumexp(zb, V), l = row_logsumexp(z, V);
    double kl = 0.0;
    float* g = dlogits ? dlogits + t * V : nullptr;
    for (int64_t i = 0; i < V; ++i) {
      const float lpb = zb[i] - lb, lp = z[i] - l;
      const float pb = std::exp(lpb);
      kl += double(pb) * double(lpb - lp);
      if (g) g[i] += weights[t] * (std::exp(lp) - pb);
    }
    total += double(weights[t]) * kl;
  }
  return total;
}

}  // namespace dg
