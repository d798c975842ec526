// The block-quantized linear kernel of quant_tile.h with AVX-512 VNNI (compiled
// with -mavx512f/bw/vl/dq -mavx512vnni -mfma -mf16c): vpdpbusd on 256-bit
// vectors (AVX512VL), which keeps 32 vector registers for a 4 x 4 tile. Signed
// Q8_0 codes are flipped to unsigned (w + 128); the tile starts each integer
// sum at -128 * sum(q) to pay that back.
#if defined(DG_X86)
#include "kernels/cpu/simd_avx512.h"
#include "kernels/cpu/quant_tile.h"

namespace dg::detail {
namespace {

struct QVnni {
  static constexpr int kTM = 4;  // 16 accumulators + 4 weight vectors of 32 ymm
  static constexpr bool kHoistScales = true;
  static constexpr int kSignedBias = 128;
  static __m256i dot_u8(__m256i acc, __m256i u, __m256i q) { return _mm256_dpbusd_epi32(acc, u, q); }
  static __m256i prep_s8(__m256i w) { return _mm256_xor_si256(w, _mm256_set1_epi8(char(0x80))); }
  static __m256i dot_s8(__m256i acc, __m256i w, __m256i q) { return _mm256_dpbusd_epi32(acc, w, q); }
};

}  // namespace

void linear_rows_q_avx512vnni(const LinearJob& jb, int64_t r0, int64_t r1) { linear_rows_q<QVnni, Avx512>(jb, r0, r1); }

}  // namespace dg::detail
#endif  // DG_X86
