// The linear kernel of matmul_tile.h instantiated for AVX-512 (this file is
// compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c).
#if defined(DG_X86)
#include "kernels/cpu/simd_avx512.h"
#include "kernels/cpu/matmul_tile.h"

namespace dg::detail {

void linear_rows_avx512(const LinearJob& job, int64_t r0, int64_t r1) { linear_rows<Avx512>(job, r0, r1); }

}  // namespace dg::detail
#endif  // DG_X86
