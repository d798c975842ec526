// AVX2 vector traits shared by the kernels compiled with AVX2 flags
// (matmul_avx2.cpp, attention_avx2.cpp). Include only from such files: see the
// linkage rule in matmul_impl.h.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "core/dtype.h"

namespace dg::detail {
namespace {

constexpr int64_t elem_size(DType d) { return d == DType::F32 ? 4 : 2; }

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
  static constexpr bool kUnpackBf16 = false;  // see simd_avx512.h; not tried on AVX2
  static void unpack_bf16(const char*, int64_t, vec*, vec*) {}
  static void permute_for_unpack(float*, const float*) {}
  static void store(float* dst, vec v) { _mm256_storeu_ps(dst, v); }
  static void store_part(float* dst, vec v, int n) {
    alignas(32) float tmp[8];
    _mm256_store_ps(tmp, v);
    std::memcpy(dst, tmp, size_t(n) * 4);
  }

  // --- used by attention (plain f32 arrays) ---
  static vec set1(float f) { return _mm256_set1_ps(f); }
  static vec loadf(const float* p) { return _mm256_loadu_ps(p); }
  // The first n lanes of p, the others `fill`.
  static vec loadf_part(const float* p, int n, float fill) {
    alignas(32) float tmp[8] = {fill, fill, fill, fill, fill, fill, fill, fill};
    std::memcpy(tmp, p, size_t(n) * 4);
    return _mm256_load_ps(tmp);
  }
  static void storef_part(float* dst, vec v, int n) { store_part(dst, v, n); }
  static vec add(vec a, vec b) { return _mm256_add_ps(a, b); }
  static vec sub(vec a, vec b) { return _mm256_sub_ps(a, b); }
  static vec mul(vec a, vec b) { return _mm256_mul_ps(a, b); }
  static vec max(vec a, vec b) { return _mm256_max_ps(a, b); }
  static vec min(vec a, vec b) { return _mm256_min_ps(a, b); }
  static vec div(vec a, vec b) { return _mm256_div_ps(a, b); }
  // a where g < 0, else b.
  static vec select_negative(vec g, vec a, vec b) { return _mm256_blendv_ps(b, a, _mm256_cmp_ps(g, zero(), _CMP_LT_OQ)); }
  static float reduce_max(vec v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
  }
  // For exp_nonpositive (attention_simd.h): round to nearest, and v * 2^n
  // with 2^n built in the exponent bits (valid for n in [-126, 127]).
  static vec round(vec v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static vec scale_pow2(vec v, vec n) {
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return mul(v, _mm256_castsi256_ps(e));
  }
  static vec fnmadd(vec a, vec b, vec c) { return _mm256_fnmadd_ps(a, b, c); }
};

}  // namespace
}  // namespace dg::detail
