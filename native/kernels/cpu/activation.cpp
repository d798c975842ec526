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

}  // namespace dg
