// AVX-512 vector traits for the linear kernel in matmul_tile.h (this file is
// compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c).
#if defined(DG_X86)
#include "kernels/cpu/matmul_tile.h"

namespace dg::detail {
namespace {

struct Avx512 {
  using vec = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kTM = 6;  // 24 accumulators + 4 weights + 1 input of 32 zmm
  // Widening BF16/F16 in registers costs nothing next to the FMAs here (measured
  // on Zen 4: ~210 GFLOP/s at T = 16..512 with it, 170-200 with pre-widening).
  static constexpr bool kPrewiden = false;

  static vec zero() { return _mm512_setzero_ps(); }
  static vec fmadd(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
  static float reduce1(vec v) { return _mm512_reduce_add_ps(v); }
  // Fold each to 8 lanes, then a transposing hadd tree.
  static __m128 reduce4(vec a, vec b, vec c, vec d) {
    __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    __m256 b8 = _mm256_add_ps(_mm512_castps512_ps256(b), _mm512_extractf32x8_ps(b, 1));
    __m256 c8 = _mm256_add_ps(_mm512_castps512_ps256(c), _mm512_extractf32x8_ps(c, 1));
    __m256 d8 = _mm256_add_ps(_mm512_castps512_ps256(d), _mm512_extractf32x8_ps(d, 1));
    __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a8, b8), _mm256_hadd_ps(c8, d8));
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
  }

  static __mmask16 first(int n) { return __mmask16((1u << n) - 1); }
  static vec widen(DType d, __m256i h) {
    return d == DType::F16 ? _mm512_cvtph_ps(h) : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  template <DType D>
  static vec load(const char* row, int64_t k) {
    if constexpr (D == DType::F32) return _mm512_loadu_ps(row + 4 * k);
    else return widen(D, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * k)));
  }
  template <DType D>
  static vec load_part(const char* row, int64_t k, int n) {
    if constexpr (D == DType::F32) return _mm512_maskz_loadu_ps(first(n), row + 4 * k);
    else return widen(D, _mm256_maskz_loadu_epi16(first(n), row + 2 * k));
  }
  static void store(float* dst, vec v) { _mm512_storeu_ps(dst, v); }
  static void store_part(float* dst, vec v, int n) { _mm512_mask_storeu_ps(dst, first(n), v); }
};

}  // namespace

void linear_rows_avx512(const LinearJob& job, int64_t r0, int64_t r1) { linear_rows<Avx512>(job, r0, r1); }

}  // namespace dg::detail
#endif  // DG_X86
