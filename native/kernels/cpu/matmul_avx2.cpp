// AVX2 vector traits for the linear kernel in matmul_tile.h (this file is
// compiled with -mavx2 -mfma -mf16c).
#if defined(DG_X86)
#include <cstring>

#include "kernels/cpu/matmul_tile.h"

namespace dg::detail {
namespace {

struct Avx2 {
  using vec = __m256;
  static constexpr int kLanes = 8;
  static constexpr int kTM = 3;  // 12 accumulators + 4 weights of 16 ymm; inputs come as memory operands
  // Widening in registers takes issue slots the FMAs need: pre-widen blocks
  // when several token tiles reuse them (measured: ~150 vs ~100 GFLOP/s at T = 12..24).
  static constexpr bool kPrewiden = true;

  static vec zero() { return _mm256_setzero_ps(); }
  static vec fmadd(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
  static float reduce1(vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_hadd_ps(s, s);
    return _mm_cvtss_f32(_mm_hadd_ps(s, s));
  }
  static __m128 reduce4(vec a, vec b, vec c, vec d) {
    __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
  }

  template <DType D>
  static vec load(const char* row, int64_t k) {
    if constexpr (D == DType::F32) return _mm256_loadu_ps(reinterpret_cast<const float*>(row + 4 * k));
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k));
    if constexpr (D == DType::F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  // AVX2 has no 16-bit masked loads: copy the tail into a zeroed vector-sized buffer.
  template <DType D>
  static vec load_part(const char* row, int64_t k, int n) {
    alignas(32) char tmp[32] = {};
    std::memcpy(tmp, row + elem_size(D) * k, size_t(n) * elem_size(D));
    return load<D>(tmp, 0);
  }
  static void store(float* dst, vec v) { _mm256_storeu_ps(dst, v); }
  static void store_part(float* dst, vec v, int n) {
    alignas(32) float tmp[8];
    _mm256_store_ps(tmp, v);
    std::memcpy(dst, tmp, size_t(n) * 4);
  }
};

}  // namespace

void linear_rows_avx2(const LinearJob& job, int64_t r0, int64_t r1) { linear_rows<Avx2>(job, r0, r1); }

}  // namespace dg::detail
#endif  // DG_X86
