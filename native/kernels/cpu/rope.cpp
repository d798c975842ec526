// Rotary position embedding, rotate-half form (HF Llama/Qwen2 apply_rotary_pos_emb).
#include <cmath>

#include "kernels/ops.h"

namespace dg {

void rope_tables(float* cos_out, float* sin_out, const double* positions, int64_t T, const float* inv_freq,
                 int64_t half) {
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      // In double: at positions in the tens of thousands an f32 angle is off by ~1e-3 rad.
      const double angle = positions[t] * double(inv_freq[i]);
      cos_out[t * half + i] = float(std::cos(angle));
      sin_out[t * half + i] = float(std::sin(angle));
    }
  }
}

void rope_forward(float* x, const float* cos_t, const float* sin_t, int64_t T, int64_t n_heads, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  for (int64_t t = 0; t < T; ++t) {
    const float* c = cos_t + t * half;
    const float* s = sin_t + t * half;
    for (int64_t h = 0; h < n_heads; ++h) {
      float* x1 = x + (t * n_heads + h) * head_dim;
      float* x2 = x1 + half;
      for (int64_t i = 0; i < half; ++i) {
        const float a = x1[i], b = x2[i];
        x1[i] = a * c[i] - b * s[i];
        x2[i] = b * c[i] + a * s[i];
      }
    }
  }
}

void rope_backward(float* dx, const float* cos_t, const float* sin_t, int64_t T, int64_t n_heads, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  for (int64_t t = 0; t < T; ++t) {
    const float* c = cos_t + t * half;
    const float* s = sin_t + t * half;
    for (int64_t h = 0; h < n_heads; ++h) {
      float* g1 = dx + (t * n_heads + h) * head_dim;
      float* g2 = g1 + half;
      for (int64_t i = 0; i < half; ++i) {  // the transposed rotation
        const float a = g1[i], b = g2[i];
        g1[i] = a * c[i] + b * s[i];
        g2[i] = b * c[i] - a * s[i];
      }
    }
  }
}

}  // namespace dg
