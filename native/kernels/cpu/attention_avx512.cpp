// attention_simd.h instantiated for AVX-512 (compiled with -mavx512f -mavx512bw
// -mavx512vl -mavx512dq -mfma -mf16c).
#if defined(DG_X86)
#include "kernels/cpu/simd_avx512.h"
#include "kernels/cpu/attention_simd.h"

namespace dg::detail {

void attend_row_avx512(const AttentionRows& a) { attend_row_any<Avx512>(a); }
void attend_rows4_avx512(const AttentionRows& a) { attend_rows4_any<Avx512>(a); }

}  // namespace dg::detail
#endif  // DG_X86
