// The block-quantized linear kernel (math in matmul_q.cpp), written once over an
// integer-dot ISA V and instantiated by matmul_q_avx2.cpp and
// matmul_q_avx512vnni.cpp under their own -m flags. Everything is in an
// anonymous namespace so the per-ISA copies never merge at link time, and it
// uses only intrinsics and plain arithmetic (see matmul_impl.h).
//
// One micro-tile is TM tokens x NR weight rows. Per 32-block it loads NR weight
// vectors of 32 codes (Q4 nibbles unpacked to bytes), then for each token one
// vector of 32 int8 activations, and issues TM * NR integer dot products
// (vpdpbusd with VNNI; vpmaddubsw + vpmaddwd on AVX2) that are scaled by
// a[row][block] * dx[token][block] into f32 accumulators. vpdpbusd multiplies
// unsigned by signed bytes: Q4 codes are unsigned already (Q4_0's -8 becomes
// -8 * sum(q) in the integer accumulator's start value); Q8_0 codes are made
// unsigned by flipping their top bit (+128), paid back the same way. Q4_K's
// per-sub-block offsets add sum_j o[j] * dx s[t][j] with one 8-wide FMA per
// 256-block. At one token tile (decode) the weights stream from DRAM once,
// with software prefetch a few tiles ahead.
//
// V provides: kTM, kHoistScales (keep row scales broadcast in registers), kSignedBias (what dot_s8 adds per unit of sum(q)),
// dot_u8(acc, u, q) = acc + sum over 4-byte groups of u * q (u unsigned),
// For many tokens (prefill, T >= kQuantPrefillTokens) the same entry point instead
// dequantizes each L2-sized block of rows to f32 once (a few ops per weight)
// (as f16) and runs the register-blocked tile of matmul_tile.h over it with every
// token tile: with a float scale per 32-block on both sides, the int8 path
// needs a convert, a scale product and an FMA per 32 products and measured
// ~0.65x the f32 tile's throughput (CPU time, 128 x 2048 x 1536 on this
// Xeon), while the f32 tile is FMA-bound at 16 products per instruction.
// It also skips the activations' int8 rounding in prefill.
// Include simd_avx2.h or simd_avx512.h and matmul_tile.h before this file and
// instantiate linear_rows_q<QV, FV> with FV the f32 tile's vector type.
//
// prep_s8(w) once per weight vector of signed codes, then
// dot_s8(acc, prep_s8(w), q) = acc + w . q + kSignedBias * (group sums of q).
#pragma once
#include <immintrin.h>

#include "kernels/cpu/matmul_impl.h"
#include "kernels/cpu/matmul_tile.h"
#include "quant/layout.h"

namespace dg::detail {
namespace {

constexpr int kQNR = 4;  // weight rows per tile

inline float qhalf(const void* p) {
  unsigned short h;
  __builtin_memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

inline float qhsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Per-format access to a (super-)block of kSub 32-blocks (quant/layout.h):
// prepare() reads its scales from the header, load() a 32-block's codes.
struct FmtQ8_0 {
  static constexpr int kSub = 1, kOffset = 0;
  static constexpr DType kType = DType::Q8_0;
  static constexpr bool kSigned = true, kMins = false;
  static void prepare(const char* h, float* a, float*) { a[0] = qhalf(h); }
  static __m256i load(const char* c, int) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c)); }
};

struct FmtQ4_0 {
  static constexpr int kSub = 1, kOffset = 8;
  static constexpr DType kType = DType::Q4_0;
  static constexpr bool kSigned = false, kMins = false;
  static void prepare(const char* h, float* a, float*) { a[0] = qhalf(h); }
  static __m256i load(const char* c, int) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c));
    const __m128i m = _mm_set1_epi8(15);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
  }
};

struct FmtQ4_K {
  static constexpr int kSub = 8, kOffset = 0;
  static constexpr DType kType = DType::Q4_K;
  static constexpr bool kSigned = false, kMins = true;
  // a[j] = d * sc[j]; o[j] = -dmin * m[j]. The 6-bit fields are unpacked
  // with 32-bit masks (as llama.cpp does) into 8 scale bytes then 8 min bytes.
  static void prepare(const char* h, float* a, float* o) {
    unsigned u[4];
    __builtin_memcpy(u, h + 4, 12);
    u[3] = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
    const unsigned mins_lo = u[1] & 0x3f3f3f3fu;
    u[1] = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    u[2] = mins_lo;
    u[0] &= 0x3f3f3f3fu;
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(u));
    const __m256 sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
    const __m256 m = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(v, 8)));
    _mm256_storeu_ps(a, _mm256_mul_ps(sc, _mm256_set1_ps(qhalf(h))));
    _mm256_storeu_ps(o, _mm256_mul_ps(m, _mm256_set1_ps(-qhalf(h + 2))));
  }
  static __m256i load(const char* c, int j) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 32 * (j / 2)));
    const __m256i m = _mm256_set1_epi8(15);
    return (j & 1) ? _mm256_and_si256(_mm256_srli_epi16(v, 4), m) : _mm256_and_si256(v, m);
  }
};

// y[t][r + j] (+)= row r + j . token t for t < TM, j < NR, over all K (a
// multiple of 32 * F::kSub). With pf > 0 the bytes pf past each block are
// prefetched in step with the rows.
template <class V, class F, int TM, int NR>
void qtile(const LinearJob& jb, int64_t t0, int64_t r, int64_t pf) {
  const int64_t K = jb.cols, nb = K / 32, nsb = nb / F::kSub;
  QuantRow row[NR];
  for (int j = 0; j < NR; ++j) row[j] = quant_row(jb.w, F::kType, jb.rows, K, r + j);
  const QuantActs& x = *jb.qx;
  constexpr int kBias = F::kOffset + (F::kSigned ? V::kSignedBias : 0);
  __m256 acc[TM][NR];
  for (int t = 0; t < TM; ++t)
    for (int j = 0; j < NR; ++j) acc[t][j] = _mm256_setzero_ps();
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const char* codes[NR];
    float a[NR][F::kSub], o[NR][F::kSub];
    for (int j = 0; j < NR; ++j) {
      const char* hdr = row[j].hdr + sb * row[j].stride;
      codes[j] = row[j].codes + sb * row[j].stride;
      F::prepare(hdr, a[j], o[j]);
      if (pf) _mm_prefetch(codes[j] + pf, _MM_HINT_T0);
    }
    for (int sub = 0; sub < F::kSub; ++sub) {
      const int64_t b = sb * F::kSub + sub;
      __m256i wv[NR];
      for (int j = 0; j < NR; ++j) {
        wv[j] = F::load(codes[j], sub);
        if constexpr (F::kSigned) wv[j] = V::prep_s8(wv[j]);
      }
      __m256 av[NR];
      if constexpr (V::kHoistScales)
        for (int j = 0; j < NR; ++j) av[j] = _mm256_set1_ps(a[j][sub]);
      for (int t = 0; t < TM; ++t) {
        const int64_t tb = (t0 + t) * nb + b;
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q + (t0 + t) * K + 32 * b));
        const __m256i init = kBias ? _mm256_zextsi128_si256(_mm_cvtsi32_si128(-kBias * x.s[tb])) : _mm256_setzero_si256();
        const float dx = x.d[tb];
        const __m256 dxv = _mm256_set1_ps(dx);
        for (int j = 0; j < NR; ++j) {
          const __m256i dot = F::kSigned ? V::dot_s8(init, wv[j], xv) : V::dot_u8(init, wv[j], xv);
          // With 32 registers the row scales stay broadcast: one vmulps per product.
          const __m256 scale = V::kHoistScales ? _mm256_mul_ps(av[j], dxv) : _mm256_set1_ps(a[j][sub] * dx);
          acc[t][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[t][j]);
        }
      }
    }
    if constexpr (F::kMins) {
      for (int t = 0; t < TM; ++t) {
        const __m256 ds = _mm256_loadu_ps(x.ds + (t0 + t) * nb + sb * 8);
        for (int j = 0; j < NR; ++j) acc[t][j] = _mm256_fmadd_ps(_mm256_loadu_ps(o[j]), ds, acc[t][j]);
      }
    }
  }
  for (int t = 0; t < TM; ++t) {
    float* y = jb.y + (t0 + t) * jb.rows + r;
    for (int j = 0; j < NR; ++j) {
      float s = qhsum(acc[t][j]);
      if (jb.bias) s += jb.bias[r + j];
      y[j] = jb.accumulate ? y[j] + s : s;
    }
  }
}

template <class V, class F, int NR, int TM = V::kTM>
void qtile_tokens(int64_t tm, const LinearJob& jb, int64_t t0, int64_t r, int64_t pf) {
  if constexpr (TM > 1) {
    if (tm < TM) return qtile_tokens<V, F, NR, TM - 1>(tm, jb, t0, r, pf);
  }
  qtile<V, F, TM, NR>(jb, t0, r, pf);
}

constexpr int64_t kQPrefetchTiles = 4;

// Rows [r0, r1) in blocks that stay in L2 while every token tile passes.
template <class V, class F>
void qrows(const LinearJob& jb, int64_t r0, int64_t r1) {
  const int64_t K = jb.cols, ldw = K / (32 * F::kSub) * qblock_bytes(F::kType);
  // Decode streams the weights: prefetch as far ahead as 4 tiles of rows.
  const int64_t pf = jb.T <= V::kTM ? kQPrefetchTiles * kQNR * ldw : 0;
  int64_t rb = (256 * 1024 / (ldw > 0 ? ldw : 1)) / kQNR * kQNR;
  rb = rb < kQNR ? kQNR : rb;
  for (int64_t b0 = r0; b0 < r1; b0 += rb) {
    const int64_t b1 = r1 - b0 < rb ? r1 : b0 + rb;
    for (int64_t t0 = 0; t0 < jb.T; t0 += V::kTM) {
      const int64_t tm = jb.T - t0 < V::kTM ? jb.T - t0 : V::kTM;
      int64_t r = b0;
      for (; r + kQNR <= b1; r += kQNR) qtile_tokens<V, F, kQNR>(tm, jb, t0, r, pf);
      for (; r < b1; ++r) qtile_tokens<V, F, 1>(tm, jb, t0, r, 0);
    }
  }
}

// dst[k] = weight k of a row of K (K whole super-blocks of F), rounded to f16.
template <class F>
void dequant_row(const QuantRow& row, int64_t K, unsigned short* dst) {
  const int64_t nsb = K / (32 * F::kSub);
  for (int64_t sb = 0; sb < nsb; ++sb) {
    float a[F::kSub], o[F::kSub];
    F::prepare(row.hdr + sb * row.stride, a, o);
    for (int sub = 0; sub < F::kSub; ++sub) {
      const __m256i v = F::load(row.codes + sb * row.stride, sub);  // 32 codes (Q8_0 signed)
      const __m256 av = _mm256_set1_ps(a[sub]);
      const __m256 ov = _mm256_set1_ps(F::kMins ? o[sub] : 0.f);
      const __m256i off = _mm256_set1_epi32(F::kOffset);
      unsigned short* d = dst + (sb * F::kSub + sub) * 32;
      for (int q = 0; q < 4; ++q) {
        const __m128i bytes = q == 0 ? _mm256_castsi256_si128(v)
                              : q == 1 ? _mm_srli_si128(_mm256_castsi256_si128(v), 8)
                              : q == 2 ? _mm256_extracti128_si256(v, 1)
                                       : _mm_srli_si128(_mm256_extracti128_si256(v, 1), 8);
        __m256i n = F::kSigned ? _mm256_cvtepi8_epi32(bytes) : _mm256_cvtepu8_epi32(bytes);
        n = _mm256_sub_epi32(n, off);
        const __m256 wf = _mm256_fmadd_ps(_mm256_cvtepi32_ps(n), av, ov);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 8 * q), _mm256_cvtps_ph(wf, _MM_FROUND_TO_NEAREST_INT));
      }
    }
  }
}

// Prefill: rows [r0, r1) in blocks of ~192 KiB of f16 weights, each
// dequantized once and then multiplied by every token tile (see above). f16
// (widened in registers by the tile) halves the L2 traffic of an f32 block,
// which measured faster; its rounding (2^-11 relative) is far below any of
// the formats' steps.
template <class FV, class F>
void qrows_prefill(const LinearJob& jb, int64_t r0, int64_t r1) {
  const int64_t K = jb.cols;
  int64_t rb = (192 * 1024 / 2 / (K > 0 ? K : 1)) / kQNR * kQNR;
  rb = rb < kQNR ? kQNR : rb > 256 ? 256 : rb;
  unsigned short* buf = reinterpret_cast<unsigned short*>(thread_scratch((rb * K + 1) / 2));
  for (int64_t b0 = r0; b0 < r1; b0 += rb) {
    const int64_t b1 = r1 - b0 < rb ? r1 : b0 + rb;
    for (int64_t r = b0; r < b1; ++r) dequant_row<F>(quant_row(jb.w, F::kType, jb.rows, K, r), K, buf + (r - b0) * K);
    rows<FV, DType::F16>(jb, reinterpret_cast<const char*>(buf), K * 2, b0, b1, nullptr);
  }
}

template <class V, class FV>
void linear_rows_q(const LinearJob& jb, int64_t r0, int64_t r1) {
  const bool prefill = jb.T >= kQuantPrefillTokens;
  switch (jb.dtype) {
    case DType::Q8_0: return prefill ? qrows_prefill<FV, FmtQ8_0>(jb, r0, r1) : qrows<V, FmtQ8_0>(jb, r0, r1);
    case DType::Q4_0: return prefill ? qrows_prefill<FV, FmtQ4_0>(jb, r0, r1) : qrows<V, FmtQ4_0>(jb, r0, r1);
    case DType::Q4_K: return prefill ? qrows_prefill<FV, FmtQ4_K>(jb, r0, r1) : qrows<V, FmtQ4_K>(jb, r0, r1);
    default: return;
  }
}

}  // namespace
}  // namespace dg::detail
