// The linear kernel of matmul_tile.h instantiated for AVX2 (this file is
// compiled with -mavx2 -mfma -mf16c).
#if defined(DG_X86)
#include "kernels/cpu/simd_avx2.h"
#include "kernels/cpu/matmul_tile.h"

namespace dg::detail {

void linear_rows_avx2(const LinearJob& job, int64_t r0, int64_t r1) { linear_rows<Avx2>(job, r0, r1); }

}  // namespace dg::detail
#endif  // DG_X86
