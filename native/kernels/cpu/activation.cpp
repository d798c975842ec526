// SwiGLU gate of the Llama/Qwen2 MLP: down(silu(gate(x)) * up(x)).
#include <cmath>

#include "kernels/ops.h"

namespace dg {

void swiglu_forward(float* out, const float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.f + std::exp(-g)) * up[i];
  }
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    const float s = 1.f / (1.f + std::exp(-g));
    const float silu = g * s;
    dup[i] += dout[i] * silu;
    dgate[i] += dout[i] * up[i] * s * (1.f + g * (1.f - s));
  }
}

}  // namespace dg
