// swiglu_any (simd_math.h) instantiated for AVX2 (compiled with -mavx2 -mfma -mf16c).
#if defined(DG_X86)
#include "kernels/cpu/simd_avx2.h"
#include "kernels/cpu/simd_math.h"

namespace dg::detail {

void swiglu_avx2(float* out, const float* gate, const float* up, int64_t n) { swiglu_any<Avx2>(out, gate, up, n); }

}  // namespace dg::detail
#endif  // DG_X86
