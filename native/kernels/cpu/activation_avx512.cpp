// swiglu_any (simd_math.h) instantiated for AVX-512 (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c).
#if defined(DG_X86)
#include "kernels/cpu/simd_avx512.h"
#include "kernels/cpu/simd_math.h"

namespace dg::detail {

void swiglu_avx512(float* out, const float* gate, const float* up, int64_t n) { swiglu_any<Avx512>(out, gate, up, n); }

}  // namespace dg::detail
#endif  // DG_X86
