// attention_simd.h instantiated for AVX2 (compiled with -mavx2 -mfma -mf16c).
#if defined(DG_X86)
#include "kernels/cpu/simd_avx2.h"
#include "kernels/cpu/attention_simd.h"

namespace dg::detail {

void attend_row_avx2(const AttentionRows& a) { attend_row_any<Avx2>(a); }

}  // namespace dg::detail
#endif  // DG_X86
