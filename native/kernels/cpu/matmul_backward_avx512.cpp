// linear_backward's input-gradient kernel (matmul_backward_tile.h) for AVX-512.
#if defined(DG_X86)
#include "kernels/cpu/simd_avx512.h"
#include "kernels/cpu/matmul_backward_tile.h"

namespace dg::detail {

int64_t linear_dx_strip_avx512() { return DxShape<Avx512>::kStrip; }
void linear_dx_strips_avx512(const LinearDxJob& job, int64_t s0, int64_t s1) { linear_dx<Avx512>(job, s0, s1); }

}  // namespace dg::detail
#endif  // DG_X86
