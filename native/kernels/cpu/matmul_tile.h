// The register-blocked linear kernel, written once over a vector type V and
// instantiated by each ISA file (matmul_avx2.cpp, matmul_avx512.cpp) under its
// own -m flags. Everything here is in an anonymous namespace so the copies
// compiled for different ISAs never merge at link time.
//
// One micro-tile computes TM tokens x 4 weight rows: per step of V::kLanes
// columns it loads 4 weight vectors (widened from the stored dtype) and TM input
// vectors and issues 4*TM FMAs into separate accumulators, which are reduced
// horizontally once at the end. Rows are walked in blocks that fit in L2;
// within a block, token tiles are the outer loop.
// Weights are widened in registers straight from memory, so at few tokens
// (decode) each weight byte is read from DRAM exactly once per call. With many
// tokens (prefill), ISAs where that widening competes with the FMAs
// (V::kPrewiden, AVX2) widen each 16-bit block to f32 once into a per-thread
// buffer that every token tile then reuses.
// BF16 is widened and FMA'd in f32 (not dpbf16, which would round activations).
//
// V (simd_avx2.h / simd_avx512.h) provides: vec, kLanes, kTM, kPrewiden, zero(), fmadd(a, b, c), reduce1(v) -> float,
// reduce4(a, b, c, d) -> {sum a, sum b, sum c, sum d} as __m128,
// load<D>(row_bytes, k) and load_part<D>(row_bytes, k, n) (first n lanes, rest 0)
// for D in F32/F16/BF16, and store(dst, v) / store_part(dst, v, n) for f32.
#pragma once
// Included after simd_avx2.h / simd_avx512.h, which bring in the intrinsics.
#include <immintrin.h>

#include "kernels/cpu/matmul_impl.h"

namespace dg::detail {
namespace {

constexpr int kNR = 4;  // weight rows per tile
// Up to this many tokens the unpack-order BF16 path is used (2 * NR widened
// vectors + TM * NR accumulators still fit in 32 registers).
constexpr int kMaxUnpackTokens = 4;

// Where a tile's results go: y row of its first token, bias of its first row.
struct TileOut {
  float* y;
  int64_t ldy;
  const float* bias;
  bool accumulate;
};

// y[t][j] (+)= dot(x[t], w[j]) (+ bias[j]) for t < TM, j < NR.
// `prefetch`, when set, is the start of the weight bytes this tile's successor
// tiles will read: the NR rows are contiguous, so the tile issues prefetches
// that walk that region at the same pace as it consumes its own. Streaming
// (decode) needs this with short rows, where the hardware prefetcher keeps
// restarting on NR interleaved streams only a few lines long.
// `xu`, when set (BF16 with V::kUnpackBf16, few tokens), is x permuted into
// unpack order for columns [0, K / (2 kL) * 2 kL): those go two vectors per load.
template <class V, DType D, int TM, int NR>
void tile(TileOut o, const float* x, int64_t ldx, const char* w, int64_t ldw, int64_t K, const char* prefetch,
          const float* xu) {
  using vec = typename V::vec;
  constexpr int kL = V::kLanes;
  constexpr int64_t kStepBytes = NR * kL * elem_size(D);  // weight bytes consumed per k step
  vec acc[TM][NR];
  for (int t = 0; t < TM; ++t)
    for (int j = 0; j < NR; ++j) acc[t][j] = V::zero();
  int64_t k = 0;
  if constexpr (D == DType::BF16 && V::kUnpackBf16 && TM <= kMaxUnpackTokens) {
    for (; xu && k + 2 * kL <= K; k += 2 * kL) {
      if (prefetch) {
        const char* p = prefetch + (k / kL) * kStepBytes;
        for (int64_t b = 0; b < 2 * kStepBytes; b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
      }
      vec lo[NR], hi[NR];
      for (int j = 0; j < NR; ++j) V::unpack_bf16(w + j * ldw, k, &lo[j], &hi[j]);
      for (int t = 0; t < TM; ++t) {
        const vec xl = V::loadf(xu + t * ldx + k), xh = V::loadf(xu + t * ldx + k + kL);
        for (int j = 0; j < NR; ++j) acc[t][j] = V::fmadd(hi[j], xh, V::fmadd(lo[j], xl, acc[t][j]));
      }
    }
  }
  for (; k + kL <= K; k += kL) {
    if (prefetch) {
      const char* p = prefetch + (k / kL) * kStepBytes;
      for (int64_t b = 0; b < kStepBytes; b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
    }
    vec wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = V::template load<D>(w + j * ldw, k);
    for (int t = 0; t < TM; ++t) {
      vec xv = V::template load<DType::F32>(reinterpret_cast<const char*>(x + t * ldx), k);
      for (int j = 0; j < NR; ++j) acc[t][j] = V::fmadd(wv[j], xv, acc[t][j]);
    }
  }
  if (k < K) {  // column tail: zero-filled partial loads contribute nothing
    const int n = int(K - k);
    vec wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = V::template load_part<D>(w + j * ldw, k, n);
    for (int t = 0; t < TM; ++t) {
      vec xv = V::template load_part<DType::F32>(reinterpret_cast<const char*>(x + t * ldx), k, n);
      for (int j = 0; j < NR; ++j) acc[t][j] = V::fmadd(wv[j], xv, acc[t][j]);
    }
  }
  for (int t = 0; t < TM; ++t) {
    float* y = o.y + t * o.ldy;
    if constexpr (NR == 4) {
      __m128 s = V::reduce4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]);
      if (o.bias) s = _mm_add_ps(s, _mm_loadu_ps(o.bias));
      if (o.accumulate) s = _mm_add_ps(s, _mm_loadu_ps(y));
      _mm_storeu_ps(y, s);
    } else {
      for (int j = 0; j < NR; ++j) {
        float s = V::reduce1(acc[t][j]);
        if (o.bias) s += o.bias[j];
        y[j] = o.accumulate ? y[j] + s : s;
      }
    }
  }
}

// A tile of tm (1..V::kTM) tokens: the count becomes a template argument so
// the accumulators live in registers.
template <class V, DType D, int NR, int TM = V::kTM>
void tile_tokens(int64_t tm, TileOut o, const float* x, int64_t ldx, const char* w, int64_t ldw, int64_t K,
                 const char* prefetch, const float* xu) {
  if constexpr (TM > 1) {
    if (tm < TM) return tile_tokens<V, D, NR, TM - 1>(tm, o, x, ldx, w, ldw, K, prefetch, xu);
  }
  tile<V, D, TM, NR>(o, x, ldx, w, ldw, K, prefetch, xu);
}

// How far ahead (in tiles of kNR rows) a streaming pass prefetches.
constexpr int64_t kPrefetchTiles = 4;  // 2..16 measured equal; 0 loses ~30% at 768 columns

// Output rows [r0, r1) for all tokens, weight row r0 at `w`, row stride `ldw`
// bytes. Tokens outer, rows inner: an input tile stays hot in L1 while every
// row of the block passes over it.
template <class V, DType D>
void rows(const LinearJob& jb, const char* w, int64_t ldw, int64_t r0, int64_t r1, const float* xu) {
  const int64_t K = jb.cols;
  // One token tile means every weight byte is read exactly once: a stream.
  const bool streaming = jb.T <= V::kTM;
  for (int64_t t0 = 0; t0 < jb.T; t0 += V::kTM) {
    const int64_t tm = jb.T - t0 < V::kTM ? jb.T - t0 : V::kTM;
    const float* x = jb.x + t0 * K;
    for (int64_t r = r0; r < r1; r += kNR) {
      TileOut o{jb.y + t0 * jb.rows + r, jb.rows, jb.bias ? jb.bias + r : nullptr, jb.accumulate};
      const char* wr = w + (r - r0) * ldw;
      if (r1 - r >= kNR) {
        // Prefetch hints never fault, so running past the block's end is harmless.
        const char* pf = streaming ? wr + kPrefetchTiles * kNR * ldw : nullptr;
        tile_tokens<V, D, kNR>(tm, o, x, K, wr, ldw, K, pf, xu ? xu + t0 * K : nullptr);
        continue;
      }
      for (int64_t j = r; j < r1; ++j, wr += ldw, ++o.y) {  // last 1..3 rows
        tile_tokens<V, D, 1>(tm, o, x, K, wr, ldw, K, nullptr, xu ? xu + t0 * K : nullptr);
        if (o.bias) ++o.bias;
      }
    }
  }
}

// dst[r][k] = f32(src[r][k]) for n rows of K elements.
template <class V, DType D>
void widen_rows(float* dst, const char* src, int64_t ldw, int64_t n, int64_t K) {
  constexpr int kL = V::kLanes;
  for (int64_t r = 0; r < n; ++r, src += ldw, dst += K) {
    int64_t k = 0;
    for (; k + kL <= K; k += kL) V::store(dst + k, V::template load<D>(src, k));
    if (k < K) V::store_part(dst + k, V::template load_part<D>(src, k, int(K - k)), int(K - k));
  }
}

// Rows [r0, r1) in blocks of ~384 KiB of f32 weights, which stay in a 1-2 MiB
// L2 beside the input tile while every token tile passes over them. With more
// than two token tiles and V::kPrewiden, a 16-bit block is widened to f32 once
// up front instead of in registers on every pass.
template <class V, DType D>
void linear_rows_blocked(const LinearJob& jb, int64_t r0, int64_t r1) {
  const int64_t K = jb.cols, ldw = K * elem_size(D);
  const char* w = static_cast<const char*>(jb.w);
  int64_t rb = (384 * 1024 / 4 / (K > 0 ? K : 1)) / kNR * kNR;
  rb = rb < kNR ? kNR : rb > 256 ? 256 : rb;
  float* buf = V::kPrewiden && D != DType::F32 && jb.T > 2 * V::kTM ? thread_scratch(rb * K) : nullptr;
  // Few BF16 tokens: put x in unpack order once for the whole call.
  float* xu = nullptr;
  if (D == DType::BF16 && V::kUnpackBf16 && jb.T <= kMaxUnpackTokens && K >= 2 * V::kLanes) {
    xu = thread_scratch(jb.T * K);
    for (int64_t t = 0; t < jb.T; ++t)
      for (int64_t k = 0; k + 2 * V::kLanes <= K; k += 2 * V::kLanes) V::permute_for_unpack(xu + t * K + k, jb.x + t * K + k);
  }
  for (int64_t b0 = r0; b0 < r1; b0 += rb) {
    const int64_t b1 = r1 - b0 < rb ? r1 : b0 + rb;
    if (!buf) {
      rows<V, D>(jb, w + b0 * ldw, ldw, b0, b1, xu);
    } else {
      widen_rows<V, D>(buf, w + b0 * ldw, ldw, b1 - b0, K);
      rows<V, DType::F32>(jb, reinterpret_cast<const char*>(buf), K * 4, b0, b1, nullptr);
    }
  }
}

// Entry point body shared by the ISA files.
template <class V>
void linear_rows(const LinearJob& jb, int64_t r0, int64_t r1) {
  switch (jb.dtype) {
    case DType::F32: return linear_rows_blocked<V, DType::F32>(jb, r0, r1);
    case DType::BF16: return linear_rows_blocked<V, DType::BF16>(jb, r0, r1);
    case DType::F16: return linear_rows_blocked<V, DType::F16>(jb, r0, r1);
    default: return;  // block-quantized weights go to quant_tile.h
  }
}

}  // namespace
}  // namespace dg::detail
