// SwiGLU gate of the Llama/Qwen2 MLP: down(silu(gate(x)) * up(x)).
#include <cmath>

#include "core/cpu_features.h"
#include "kernels/ops.h"

namespace dg {

namespace detail {
// The vectorized twins (activation_avx2.cpp, activation_avx512.cpp): the same
// formula with a ~1 ulp polynomial exp (simd_math.h).
void swiglu_avx2(float* out, const float* gate, const float* up, int64_t n);
void swiglu_avx512(float* out, const float* gate, const float* up, int64_t n);
}  // namespace detail

void swiglu_forward(float* out, const float* gate, const float* up, int64_t n) {
#if defined(DG_X86)
  switch (active_isa()) {
    case Isa::Avx512: return detail::swiglu_avx512(out, gate, up, n);
    case Isa::Avx2: return detail::swiglu_avx2(out, gate, up, n);
    case Isa::Scalar: break;
  }
#endif
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
