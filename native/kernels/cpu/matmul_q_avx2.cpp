// The block-quantized linear kernel of quant_tile.h on AVX2 (compiled with
// -mavx2 -mfma -mf16c): byte dot products with vpmaddubsw + vpmaddwd. vpmaddubsw
// saturates at 16 bits, so signed Q8_0 codes use the sign trick (|q| times w
// with q's sign), which stays below 2 * 127 * 127 and is exact.
#if defined(DG_X86)
#include "kernels/cpu/simd_avx2.h"
#include "kernels/cpu/quant_tile.h"

namespace dg::detail {
namespace {

struct QAvx2 {
  static constexpr int kTM = 2;  // 8 accumulators + 4 weight vectors of 16 ymm
  static constexpr bool kHoistScales = false;
  static constexpr int kSignedBias = 0;
  static __m256i dot_u8(__m256i acc, __m256i u, __m256i q) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, q), _mm256_set1_epi16(1)));
  }
  static __m256i prep_s8(__m256i w) { return w; }
  static __m256i dot_s8(__m256i acc, __m256i w, __m256i q) {
    return dot_u8(acc, _mm256_sign_epi8(q, q), _mm256_sign_epi8(w, q));
  }
};

}  // namespace

void linear_rows_q_avx2(const LinearJob& jb, int64_t r0, int64_t r1) { linear_rows_q<QAvx2, Avx2>(jb, r0, r1); }

}  // namespace dg::detail
#endif  // DG_X86
