// Linear layers of 16+ tokens on BF16 and block-quantized weights with AMX
// (Intel Advanced Matrix Extensions; compiled with -mamx-tile -mamx-bf16 and
// AVX-512 flags): each L2-sized block of weight rows is packed once (BF16
// copied, quantized dequantized) into BF16 tiles in the "VNNI" pair layout
// tdpbf16ps expects, the activations are rounded to BF16 once per call
// (jb.xbf16, zero-padded to 32 rows), and 2 x 2 tiles of 16 tokens x 16 rows
// accumulate in f32 over K in steps of 32. One tdpbf16ps is 16 x 16 x 32
// multiply-adds, ~16x a 512-bit FMA. BF16 weights are used as stored; the
// activations are rounded to BF16 (8-bit significand, 2^-9 relative), as a
// BF16 model computes in PyTorch; for quantized weights that is below the
// quantization step of every format (Q8_0: max|w| / 254 per block).
//
// Uses only intrinsics and plain code inside an anonymous namespace, except the
// entry points declared in matmul_impl.h.
#if defined(DG_X86)
// GCC 12's AVX-512 intrinsic headers trip -Wmaybe-uninitialized on their own
// undefined-vector placeholders.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kernels/cpu/matmul_impl.h"
#include "quant/layout.h"

namespace dg::detail {
namespace {

struct TileConfig {
  unsigned char palette, start_row, reserved[14];
  unsigned short colsb[16];
  unsigned char rows[16];
};

void load_tile_config() {
  TileConfig c;
  __builtin_memset(&c, 0, sizeof c);
  c.palette = 1;
  for (int i = 0; i < 8; ++i) {
    c.rows[i] = 16;
    c.colsb[i] = 64;
  }
  _tile_loadconfig(&c);
}

inline float h2f(const char* p) {
  unsigned short h;
  __builtin_memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// 32 dequantized weights of 32-block b of a row, as f32 in two vectors.
inline void block_f32(DType t, const QuantRow& row, int64_t b, __m512* lo, __m512* hi) {
  if (t == DType::Q8_0) {
    const __m512 d = _mm512_set1_ps(h2f(row.hdr + b * row.stride));
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row.codes + b * row.stride));
    *lo = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q))));
    *hi = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q, 1))));
  } else if (t == DType::Q4_0) {
    const __m512 d = _mm512_set1_ps(h2f(row.hdr + b * row.stride));
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row.codes + b * row.stride));
    const __m128i m = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
    const __m128i n0 = _mm_sub_epi8(_mm_and_si128(v, m), eight), n1 = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), m), eight);
    *lo = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(n0)));
    *hi = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(n1)));
  } else {  // Q4_K
    const char* sb = row.hdr + (b / 8) * row.stride;
    const int j = int(b % 8);
    const unsigned char* s = reinterpret_cast<const unsigned char*>(sb + 4);
    int sc, mn;
    if (j < 4) {
      sc = s[j] & 63;
      mn = s[j + 4] & 63;
    } else {
      sc = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
      mn = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
    const __m512 a = _mm512_set1_ps(h2f(sb) * float(sc)), o = _mm512_set1_ps(-h2f(sb + 2) * float(mn));
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row.codes + (b / 8) * row.stride + 32 * (j / 2)));
    const __m256i n = (j & 1) ? _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(15))
                              : _mm256_and_si256(v, _mm256_set1_epi8(15));
    *lo = _mm512_fmadd_ps(a, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(n))), o);
    *hi = _mm512_fmadd_ps(a, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(n, 1))), o);
  }
}

// Rows [b0, b0 + n) of jb's weights (n <= nr, nr a multiple of 32) into BF16
// B tiles: tile (rt, kb) holds rows b0 + 16 rt .. + 16 and columns 32 kb .. + 32,
// as 16 K-pairs x 16 rows of (w[2p], w[2p + 1]). Rows past n are zero.
void pack_rows(const LinearJob& jb, int64_t b0, int64_t n, int64_t nr, unsigned* tiles) {
  const int64_t K = jb.cols, nkb = K / 32;
  // 16 rows' pairs for one 32-column block, row-major; tile row p is then
  // column p of it, fetched with one gather and stored as one vector.
  alignas(64) unsigned pairs[16][16];
  const __m512i column = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(16));
  for (int64_t rt = 0; rt < nr / 16; ++rt) {
    QuantRow row[16];
    for (int64_t i = 0; i < 16 && rt * 16 + i < n; ++i) row[i] = quant_row(jb.w, jb.dtype, jb.rows, K, b0 + rt * 16 + i);
    for (int64_t kb = 0; kb < nkb; ++kb) {
      for (int64_t i = 0; i < 16; ++i) {
        const int64_t r = rt * 16 + i;
        if (r >= n) {
          _mm512_store_si512(pairs[i], _mm512_setzero_si512());
          continue;
        }
        __m512 lo, hi;
        block_f32(jb.dtype, row[i], kb, &lo, &hi);
        _mm512_store_si512(pairs[i], (__m512i)_mm512_cvtne2ps_pbh(hi, lo));  // element 2p, 2p+1 -> pair p
      }
      unsigned* dst = tiles + rt * nkb * 256 + kb * 256;
      for (int p = 0; p < 16; ++p)
        _mm512_storeu_si512(dst + p * 16, _mm512_i32gather_epi32(_mm512_add_epi32(column, _mm512_set1_epi32(p)), pairs, 4));
    }
  }
}

// Adds a 16 x 16 f32 result tile (tokens x rows) into y, skipping padding.
void emit(const LinearJob& jb, const float* c, int64_t t0, int64_t r0, int64_t r_end) {
  // A tile row is 16 contiguous outputs of one token: one masked vector each.
  const int64_t n = r_end - r0 < 16 ? r_end - r0 : 16;
  if (n <= 0) return;
  const __mmask16 m = __mmask16((1u << n) - 1u);
  const __m512 bias = jb.bias ? _mm512_maskz_loadu_ps(m, jb.bias + r0) : _mm512_setzero_ps();
  for (int i = 0; i < 16 && t0 + i < jb.T; ++i) {
    float* y = jb.y + (t0 + i) * jb.rows + r0;
    __m512 v = _mm512_add_ps(_mm512_load_ps(c + i * 16), bias);
    if (jb.accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, y), v);
    _mm512_mask_storeu_ps(y, m, v);
  }
}

}  // namespace

bool amx_usable() {
  static const bool ok = [] {
    unsigned a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    const bool amx_bf16 = d & (1u << 22), amx_tile = d & (1u << 24);
    if (!amx_bf16 || !amx_tile) return false;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if (((lo >> 17) & 3) != 3) return false;  // XTILECFG and XTILEDATA state enabled by the OS
    // Linux hands out the 8 KiB tile state only on request (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA).
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  }();
  return ok;
}

void activations_to_bf16(const float* x, int64_t T, int64_t K, int64_t t0, int64_t t1, unsigned short* out) {
  for (int64_t t = t0; t < t1; ++t) {
    unsigned short* o = out + t * K;
    if (t >= T) {
      __builtin_memset(o, 0, size_t(K) * 2);
      continue;
    }
    const float* r = x + t * K;
    int64_t k = 0;
    for (; k + 32 <= K; k += 32)
      _mm512_storeu_si512(o + k, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(r + k + 16), _mm512_loadu_ps(r + k)));
    for (; k < K; ++k) {
      const __m128bh h = _mm_cvtneps_pbh(_mm_set1_ps(r[k]));
      unsigned short v;
      __builtin_memcpy(&v, &h, 2);
      o[k] = v;
    }
  }
}

// ---- BF16 weights (matmul.cpp sends calls of kAmxBf16Tokens+ tokens) --------
// Here the weights are the A operand, read straight from their storage (a
// tile is 16 rows x 32 columns, row stride = the row's bytes), and the
// activations are the B operand, in pairs (jb.xpairs): for token tile tt and
// column block kb, 16 K-pairs x 16 tokens. C tiles are 16 rows x 16 tokens.
// Nothing is packed per call but the activations, so a few tokens stream the
// weights once, and each row's result does not depend on how many tokens
// share the call (every output is the same tile arithmetic in the same order).

void activations_to_bf16_pairs(const float* x, int64_t T, int64_t K, int64_t t0, int64_t t1, unsigned* out) {
  const int64_t nkb = K / 32;
  for (int64_t t = t0; t < t1; ++t) {
    unsigned* col = out + (t / 16) * nkb * 256 + (t % 16);
    for (int64_t kb = 0; kb < nkb; ++kb) {
      alignas(64) unsigned pairs[16];
      if (t < T) {
        const float* r = x + t * K + kb * 32;
        _mm512_store_si512(pairs, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(r + 16), _mm512_loadu_ps(r)));
      } else {
        _mm512_store_si512(pairs, _mm512_setzero_si512());
      }
      for (int p = 0; p < 16; ++p) col[kb * 256 + p * 16] = pairs[p];
    }
  }
}

namespace {

// Adds a 16 x 16 f32 result tile (rows x tokens) into y: rows [e0, e1) of the
// tile's rows starting at r, tokens from t0 (< T).
void emit_rows(const LinearJob& jb, const float* c, int64_t r, int64_t e0, int64_t e1, int64_t t0) {
  // Token by token: a column of the row-major tile (c[row][token], stride 16)
  // gathered into one vector of up to 16 contiguous rows of y.
  const int64_t nj = jb.T - t0 < 16 ? jb.T - t0 : 16;
  const int n = int(e1 - e0);
  if (n <= 0) return;
  const __mmask16 m = __mmask16((1u << n) - 1u);
  const __m512i rows = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                          _mm512_set1_epi32(16));
  const __m512i base = _mm512_add_epi32(rows, _mm512_set1_epi32(int((e0 - r) * 16)));
  const __m512 bias = jb.bias ? _mm512_maskz_loadu_ps(m, jb.bias + e0) : _mm512_setzero_ps();
  for (int64_t j = 0; j < nj; ++j) {
    __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, _mm512_add_epi32(base, _mm512_set1_epi32(int(j))), c, 4);
    v = _mm512_add_ps(v, bias);
    float* y = jb.y + (t0 + j) * jb.rows + e0;
    if (jb.accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, y), v);
    _mm512_mask_storeu_ps(y, m, v);
  }
}

// Rows ra, rb (16 each; rb used when TwoRows) x token tiles tt, tt + 1 (the
// second when TwoTok), accumulated over every 32-column block.
// `next` (or nullptr): the next 32 rows' bytes, fetched into L2 a slice per
// column block while these are multiplied (the tiles read 16 rows at a
// stride, which the hardware prefetchers do not follow well).
template <bool TwoRows, bool TwoTok>
void bf16_block(const char* w, int64_t ldw, const unsigned* xp, int64_t nkb, int64_t ra, int64_t rb, int64_t tt,
                const char* next, const char* next_end, float (*c)[256]) {
  _tile_zero(0);
  if (TwoTok) _tile_zero(1);
  if (TwoRows) _tile_zero(2);
  if (TwoRows && TwoTok) _tile_zero(3);
  const char* wa = w + ra * ldw;
  const char* wb = w + rb * ldw;
  const unsigned* x0 = xp + tt * nkb * 256;
  const unsigned* x1 = x0 + nkb * 256;
  const int64_t slice = ldw;  // 32 rows * ldw bytes over nkb = ldw / 64 blocks: ldw bytes per block
  for (int64_t kb = 0; kb < nkb; ++kb) {
    if (next)
      for (const char* p = next + kb * slice; p < next + (kb + 1) * slice && p < next_end; p += 64)
        _mm_prefetch(p, _MM_HINT_T1);
    _tile_loadd(4, wa + kb * 64, ldw);
    _tile_loadd(6, x0 + kb * 256, 64);
    _tile_dpbf16ps(0, 4, 6);
    if (TwoTok) {
      _tile_loadd(7, x1 + kb * 256, 64);
      _tile_dpbf16ps(1, 4, 7);
    }
    if (TwoRows) {
      _tile_loadd(5, wb + kb * 64, ldw);
      _tile_dpbf16ps(2, 5, 6);
      if (TwoTok) _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, c[0], 64);
  if (TwoTok) _tile_stored(1, c[1], 64);
  if (TwoRows) _tile_stored(2, c[2], 64);
  if (TwoRows && TwoTok) _tile_stored(3, c[3], 64);
}

}  // namespace

void linear_rows_bf16_amx(const LinearJob& jb, int64_t r0, int64_t r1) {
  const int64_t K = jb.cols, nkb = K / 32, ntt = (jb.T + 15) / 16;
  int64_t ldw = K * 2;
  const char* w = static_cast<const char*>(jb.w);
  int64_t rows = jb.rows;
  if (rows < 16) {  // fewer rows than a tile: a zero-padded copy
    char* pad = reinterpret_cast<char*>(thread_scratch(16 * K / 2));
    __builtin_memset(pad, 0, size_t(16 * ldw));
    __builtin_memcpy(pad, w, size_t(rows * ldw));
    w = pad;
    rows = 16;
  }
  alignas(64) float c[4][256];
  load_tile_config();
  for (int64_t r = r0; r < r1; r += 32) {
    // A tile that would run past the last row starts earlier instead; its
    // rows before r belong to the previous tile and are not written again.
    const int64_t ra = r < rows - 16 ? r : rows - 16;
    const bool two_rows = r + 16 < r1;
    const int64_t rb = two_rows ? (r + 16 < rows - 16 ? r + 16 : rows - 16) : ra;
    const char* next_end = w + (r1 < rows ? r1 : rows) * ldw;
    for (int64_t tt = 0; tt < ntt; tt += 2) {
      const bool two_tok = tt + 1 < ntt;
      const char* next = tt == 0 && r + 32 < r1 ? w + (r + 32) * ldw : nullptr;
      if (two_rows && two_tok) bf16_block<true, true>(w, ldw, jb.xpairs, nkb, ra, rb, tt, next, next_end, c);
      else if (two_rows) bf16_block<true, false>(w, ldw, jb.xpairs, nkb, ra, rb, tt, next, next_end, c);
      else if (two_tok) bf16_block<false, true>(w, ldw, jb.xpairs, nkb, ra, rb, tt, next, next_end, c);
      else bf16_block<false, false>(w, ldw, jb.xpairs, nkb, ra, rb, tt, next, next_end, c);
      const int64_t end_a = ra + 16 < r1 ? ra + 16 : r1;
      emit_rows(jb, c[0], ra, r, end_a, tt * 16);
      if (two_tok) emit_rows(jb, c[1], ra, r, end_a, tt * 16 + 16);
      if (two_rows) {
        const int64_t end_b = rb + 16 < r1 ? rb + 16 : r1;
        emit_rows(jb, c[2], rb, r + 16, end_b, tt * 16);
        if (two_tok) emit_rows(jb, c[3], rb, r + 16, end_b, tt * 16 + 16);
      }
    }
  }
  _tile_release();
}

void linear_rows_amx(const LinearJob& jb, int64_t r0, int64_t r1) {
  const int64_t K = jb.cols, nkb = K / 32, ldx = K * 2;
  const int64_t Tp = (jb.T + 31) / 32 * 32;
  // ~512 KiB of packed BF16 weights per block (L2), a multiple of 32 rows.
  int64_t rb = (512 * 1024 / 2 / (K > 0 ? K : 1)) / 32 * 32;
  rb = rb < 32 ? 32 : rb;
  unsigned* tiles = reinterpret_cast<unsigned*>(thread_scratch(rb * K / 2 + 256));
  alignas(64) float c[4][256];
  load_tile_config();
  for (int64_t b0 = r0; b0 < r1; b0 += rb) {
    const int64_t n = r1 - b0 < rb ? r1 - b0 : rb, nr = (n + 31) / 32 * 32;
    pack_rows(jb, b0, n, nr, tiles);
    for (int64_t t0 = 0; t0 < Tp; t0 += 32) {
      const char* a0 = reinterpret_cast<const char*>(jb.xbf16 + t0 * K);
      const char* a1 = a0 + 16 * ldx;
      for (int64_t rt = 0; rt < nr / 16; rt += 2) {
        const unsigned* bt0 = tiles + rt * nkb * 256;
        const unsigned* bt1 = bt0 + nkb * 256;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int64_t kb = 0; kb < nkb; ++kb) {
          _tile_loadd(4, a0 + kb * 64, ldx);
          _tile_loadd(5, a1 + kb * 64, ldx);
          _tile_loadd(6, bt0 + kb * 256, 64);
          _tile_loadd(7, bt1 + kb * 256, 64);
          _tile_dpbf16ps(0, 4, 6);
          _tile_dpbf16ps(1, 4, 7);
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, c[0], 64);
        _tile_stored(1, c[1], 64);
        _tile_stored(2, c[2], 64);
        _tile_stored(3, c[3], 64);
        const int64_t r = b0 + rt * 16;
        emit(jb, c[0], t0, r, b0 + n);
        emit(jb, c[1], t0, r + 16, b0 + n);
        emit(jb, c[2], t0 + 16, r, b0 + n);
        emit(jb, c[3], t0 + 16, r + 16, b0 + n);
      }
    }
  }
  _tile_release();
}


// ---- BF16 weights, fewer than kAmxBf16Tokens tokens (decode) ----------------
// One 16 x 16 tile per token would waste 15 of its 16 columns, so a decode
// step streams the weights through vdpbf16ps instead (AVX512-BF16, which every
// AMX CPU has): 32 weights x 32 BF16 activations (jb.xbf16) per instruction,
// the pair's two exact products added to an f32 lane (denormal inputs and
// results as zero, as with the tiles), against the widen and two FMAs per 32
// weights of the f32 kernel on rounded x. Prefetches run 16 rows
// ahead into L2, as the quantized decode kernels' do.
namespace {

template <int TM, int NR>
void bf16_dot_tile(const LinearJob& jb, int64_t r) {
  const int64_t K = jb.cols, full = K / 32 * 32;
  const unsigned short* w = static_cast<const unsigned short*>(jb.w) + r * K;
  const unsigned short* x = jb.xbf16;
  __m512 acc[TM][NR];
  for (int t = 0; t < TM; ++t)
    for (int j = 0; j < NR; ++j) acc[t][j] = _mm512_setzero_ps();
  auto step = [&](int64_t k, __mmask32 m) {
    __m512i wv[NR];
    for (int j = 0; j < NR; ++j) {
      _mm_prefetch(reinterpret_cast<const char*>(w + (j + 16) * K + k), _MM_HINT_T1);
      wv[j] = _mm512_maskz_loadu_epi16(m, w + j * K + k);
    }
    for (int t = 0; t < TM; ++t) {
      const __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(m, x + t * K + k);
      for (int j = 0; j < NR; ++j) acc[t][j] = _mm512_dpbf16_ps(acc[t][j], (__m512bh)wv[j], xv);
    }
  };
  for (int64_t k = 0; k < full; k += 32) step(k, ~__mmask32(0));
  if (full < K) step(full, __mmask32((1u << (K - full)) - 1u));
  for (int t = 0; t < TM; ++t) {
    float* y = jb.y + t * jb.rows + r;
    for (int j = 0; j < NR; ++j) {
      float s = _mm512_reduce_add_ps(acc[t][j]);
      if (jb.bias) s += jb.bias[r + j];
      y[j] = jb.accumulate ? y[j] + s : s;
    }
  }
}

template <int TM>
void bf16_dot_rows(const LinearJob& jb, int64_t r0, int64_t r1) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) bf16_dot_tile<TM, 4>(jb, r);
  for (; r < r1; ++r) bf16_dot_tile<TM, 1>(jb, r);
}

}  // namespace

void linear_rows_bf16_dot(const LinearJob& jb, int64_t r0, int64_t r1) {
  switch (jb.T) {
    case 1: return bf16_dot_rows<1>(jb, r0, r1);
    case 2: return bf16_dot_rows<2>(jb, r0, r1);
    default: return bf16_dot_rows<3>(jb, r0, r1);
  }
}

}  // namespace dg::detail
#endif  // DG_X86
