// AVX-512 vector traits shared by the kernels compiled with AVX-512 flags
// (matmul_avx512.cpp, attention_avx512.cpp). Include only from such files: see
// the linkage rule in matmul_impl.h.
#pragma once
// GCC 12's AVX-512 headers self-initialize "undefined" vectors (__Y = __Y),
// which -Wuninitialized reports wherever they are inlined (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>

#include "core/dtype.h"

namespace dg::detail {
namespace {

constexpr int64_t elem_size(DType d) { return d == DType::F32 ? 4 : 2; }

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
  // BF16 widened 32 at a time: one full-line load, then each 16-bit value
  // interleaved with a zero (unpacklo/hi) becomes the high half of an f32 lane.
  // Cheaper than zero-extend + shift per 16 and measured faster when streaming
  // (35 vs 29-32 GB/s). The lanes come out in unpack order, so x must be put in
  // that order first (permute_for_unpack).
  static constexpr bool kUnpackBf16 = true;
  static void unpack_bf16(const char* row, int64_t k, vec* lo, vec* hi) {
    const __m512i w = _mm512_loadu_si512(row + 2 * k);
    *lo = _mm512_castsi512_ps(_mm512_unpacklo_epi16(_mm512_setzero_si512(), w));
    *hi = _mm512_castsi512_ps(_mm512_unpackhi_epi16(_mm512_setzero_si512(), w));
  }
  // dst[0..32) = src[0..32) in unpack order: per 128-bit lane g, unpacklo takes
  // elements 8g..8g+3 and unpackhi 8g+4..8g+7.
  static void permute_for_unpack(float* dst, const float* src) {
    for (int l = 0; l < 16; ++l) {
      dst[l] = src[(l / 4) * 8 + l % 4];
      dst[16 + l] = src[(l / 4) * 8 + 4 + l % 4];
    }
  }
  static void store(float* dst, vec v) { _mm512_storeu_ps(dst, v); }
  static void store_part(float* dst, vec v, int n) { _mm512_mask_storeu_ps(dst, first(n), v); }

  // --- used by attention (plain f32 arrays) ---
  static vec set1(float f) { return _mm512_set1_ps(f); }
  static vec loadf(const float* p) { return _mm512_loadu_ps(p); }
  // The first n lanes of p, the others `fill`.
  static vec loadf_part(const float* p, int n, float fill) { return _mm512_mask_loadu_ps(set1(fill), first(n), p); }
  static void storef_part(float* dst, vec v, int n) { _mm512_mask_storeu_ps(dst, first(n), v); }
  static vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
  static vec sub(vec a, vec b) { return _mm512_sub_ps(a, b); }
  static vec mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
  static vec max(vec a, vec b) { return _mm512_max_ps(a, b); }
  static vec min(vec a, vec b) { return _mm512_min_ps(a, b); }
  static vec div(vec a, vec b) { return _mm512_div_ps(a, b); }
  // a where g < 0, else b.
  static vec select_negative(vec g, vec a, vec b) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(g, zero(), _CMP_LT_OQ), b, a); }
  static float reduce_max(vec v) { return _mm512_reduce_max_ps(v); }
  // For exp_nonpositive (attention_simd.h): round to nearest, and v * 2^n.
  static vec round(vec v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static vec scale_pow2(vec v, vec n) { return _mm512_scalef_ps(v, n); }
  static vec fnmadd(vec a, vec b, vec c) { return _mm512_fnmadd_ps(a, b, c); }
};

}  // namespace
}  // namespace dg::detail
