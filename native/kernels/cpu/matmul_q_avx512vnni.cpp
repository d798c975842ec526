// The block-quantized linear kernels with AVX-512 VNNI (compiled with
// -mavx512f/bw/vl/dq -mavx512vnni -mfma -mf16c).
//
// Decode (one token, or a batch below kQuantPrefillTokens) runs over whole
// 16-row groups (quant/layout.h) on 512-bit vectors, a group at a time while
// tiles of up to two tokens pass over it: per block column, the 16 rows'
// scales are one f16 vector (times dx), and a 64-byte load holds the codes of
// two rows (Q8_0) or four (Q4_0, as low and high nibbles), dotted with the
// token's codes broadcast to each row's lanes (Q4_K: see GroupQ4_K). A row's int32
// lanes start so that together they pay back the codes' offset (-128 or -8
// times sum(q)), are converted, and are scaled by the row's scale (a vpermps
// of the scale vector) into f32 accumulators: about 3 instructions per 32
// weights instead of 10. Streaming an 8960 x 1536 matrix: Q8_0 18.3 -> 22.5
// GB/s, Q4_0 16.4 -> 25.8, Q4_K 12.4 -> 18.5 (the machine read 25-33).
//
// Rows outside whole groups (a last partial group) and prefill go through
// quant_tile.h: vpdpbusd on 256-bit vectors (AVX512VL), which keeps 32 vector
// registers for a 4 x 4 tile. Signed Q8_0 codes are flipped to unsigned
// (w + 128); the tile starts each integer sum at -128 * sum(q) to pay that back.
#if defined(DG_X86)
#include "kernels/cpu/simd_avx512.h"
#include "kernels/cpu/quant_tile.h"

namespace dg::detail {
namespace {

// Prefetch distances of the decode kernel, in bytes past the block column being read.
constexpr int64_t kFarPrefetch = 96 * 1024, kNearPrefetch = 2048;

struct QVnni {
  static constexpr int kTM = 4;  // 16 accumulators + 4 weight vectors of 32 ymm
  static constexpr bool kHoistScales = true;
  static constexpr int kSignedBias = 128;
  static __m256i dot_u8(__m256i acc, __m256i u, __m256i q) { return _mm256_dpbusd_epi32(acc, u, q); }
  static __m256i prep_s8(__m256i w) { return _mm256_xor_si256(w, _mm256_set1_epi8(char(0x80))); }
  static __m256i dot_s8(__m256i acc, __m256i w, __m256i q) { return _mm256_dpbusd_epi32(acc, w, q); }
};

// One token's int8 activations (QuantActs at that token).
struct TokenActs {
  const int8_t* q;
  const float *d, *ds;
  const int32_t* s;
};

// One block column of a 16-row group against TM tokens' block b, per format:
// kElems weights and kBytes per column; per token kAccs f32 accumulators of
// 16 / kAccs rows each (row j in accumulator j / (16 / kAccs), a lane range of
// its own); up to kTM tokens share each weight load.
struct GroupQ8_0 {
  static constexpr int64_t kElems = 32, kBytes = 544;  // 16 f16 scales, then 16 x 32 codes
  static constexpr int kAccs = 8, kTM = 2;             // rows 2p, 2p + 1: 8 lanes each
  template <int TM>
  static void column(const char* col, const TokenActs* x, int64_t b, __m512 (*acc)[kAccs]) {
    const __m512 h = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(col)));
    __m512 sc[TM];
    __m512i xv[TM], init[TM];
    for (int t = 0; t < TM; ++t) {
      sc[t] = _mm512_mul_ps(h, _mm512_set1_ps(x[t].d[b]));
      xv[t] = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[t].q + 32 * b)));
      init[t] = _mm512_set1_epi32(-16 * x[t].s[b]);  // codes made unsigned (+128): 8 lanes pay back -128 sum(q)
    }
    const __m512i flip = _mm512_set1_epi8(char(0x80));
    for (int p = 0; p < 8; ++p) {
      const __m512i wv = _mm512_xor_si512(_mm512_loadu_si512(col + 32 + 64 * p), flip);
      const int a = 2 * p, c = 2 * p + 1;
      const __m512i spread = _mm512_set_epi32(c, c, c, c, c, c, c, c, a, a, a, a, a, a, a, a);
      for (int t = 0; t < TM; ++t) {
        const __m512 dot = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(init[t], wv, xv[t]));
        acc[t][p] = _mm512_fmadd_ps(dot, _mm512_permutexvar_ps(spread, sc[t]), acc[t][p]);
      }
    }
  }
};

struct GroupQ4_0 {
  static constexpr int64_t kElems = 32, kBytes = 288;  // 16 f16 scales, then 16 x 16 bytes of nibbles
  static constexpr int kAccs = 4, kTM = 2;             // rows 4p .. 4p + 3: 4 lanes (one 128-bit lane) each
  template <int TM>
  static void column(const char* col, const TokenActs* x, int64_t b, __m512 (*acc)[kAccs]) {
    const __m512 h = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(col)));
    __m512 sc[TM];
    __m512i xlo[TM], xhi[TM], init[TM];
    for (int t = 0; t < TM; ++t) {
      sc[t] = _mm512_mul_ps(h, _mm512_set1_ps(x[t].d[b]));
      // Low nibbles are elements 0-15, high nibbles 16-31 (formats.h).
      xlo[t] = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[t].q + 32 * b)));
      xhi[t] = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[t].q + 32 * b + 16)));
      init[t] = _mm512_set1_epi32(-2 * x[t].s[b]);  // codes n stand for n - 8: 4 lanes pay back -8 sum(q)
    }
    const __m512i m = _mm512_set1_epi8(15);
    for (int p = 0; p < 4; ++p) {
      const __m512i v = _mm512_loadu_si512(col + 32 + 64 * p);
      const __m512i lo = _mm512_and_si512(v, m), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m);
      const int r0 = 4 * p, r1 = r0 + 1, r2 = r0 + 2, r3 = r0 + 3;
      const __m512i spread = _mm512_set_epi32(r3, r3, r3, r3, r2, r2, r2, r2, r1, r1, r1, r1, r0, r0, r0, r0);
      for (int t = 0; t < TM; ++t) {
        const __m512i d = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(init[t], lo, xlo[t]), hi, xhi[t]);
        acc[t][p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_permutexvar_ps(spread, sc[t]), acc[t][p]);
      }
    }
  }
};

// Q4_K has 8 sub-blocks per column, each with its own 6-bit scale and min:
// the 16 headers are unpacked together (four rows per vector, as
// FmtQ4_K::prepare does for one), and each row's 128 bytes are two 64-byte
// loads whose low and high nibbles hold two sub-blocks each (sub-blocks 0 | 2,
// 1 | 3, 4 | 6, 5 | 7), dotted with the token's codes arranged the same way
// once per column. One token at a time: its 16 accumulators fill the registers.
struct GroupQ4_K {
  static constexpr int64_t kElems = 256, kBytes = 2304;  // 16 x 16 header bytes, then 16 x 128 bytes of nibbles
  static constexpr int kAccs = 16, kTM = 1;              // one accumulator per row
  template <int TM>
  static void column(const char* col, const TokenActs* x, int64_t sb, __m512 (*acc)[kAccs]) {
    static_assert(TM == 1, "Q4_K columns take one token");
    const int8_t* q = x->q + 256 * sb;
    auto pair = [q](int lo, int hi) {
      return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 32 * lo))),
                                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 32 * hi)), 1);
    };
    const __m512i x02 = pair(0, 2), x13 = pair(1, 3), x46 = pair(4, 6), x57 = pair(5, 7);
    // Lanes 0-7 take sub-block lo's scale, 8-15 sub-block hi's.
    auto spread = [](int lo, int hi) { return _mm512_set_epi32(hi, hi, hi, hi, hi, hi, hi, hi, lo, lo, lo, lo, lo, lo, lo, lo); };
    const __m512i i02 = spread(0, 2), i13 = spread(1, 3), i46 = spread(4, 6), i57 = spread(5, 7);
    const __m256 dx = _mm256_loadu_ps(x->d + 8 * sb), ds = _mm256_loadu_ps(x->ds + 8 * sb);
    const __m512i m = _mm512_set1_epi8(15);
    // Row j's header is 128-bit lane j % 4 of vector j / 4: dwords (d, dmin),
    // u0, u1, u2 (the 12 scale bytes); unpacked to sc[0..7], m[0..7] in bytes.
    alignas(64) unsigned char scm[16][16];
    for (int k = 0; k < 4; ++k) {
      const __m512i h = _mm512_loadu_si512(col + 64 * k);
      const __m512i u0 = _mm512_shuffle_epi32(h, _MM_PERM_BBBB), u1 = _mm512_shuffle_epi32(h, _MM_PERM_CCCC),
                    u2 = _mm512_shuffle_epi32(h, _MM_PERM_DDDD);
      const __m512i m6 = _mm512_set1_epi32(0x3f3f3f3f), m4 = _mm512_set1_epi32(0x0f0f0f0f), m2 = _mm512_set1_epi32(0x03030303);
      const __m512i sc_lo = _mm512_and_si512(u0, m6), m_lo = _mm512_and_si512(u1, m6);
      const __m512i sc_hi = _mm512_or_si512(_mm512_and_si512(u2, m4), _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u0, 6), m2), 4));
      const __m512i m_hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u2, 4), m4),
                                           _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u1, 6), m2), 4));
      __m512i v = _mm512_mask_blend_epi32(0x2222, sc_lo, sc_hi);
      v = _mm512_mask_blend_epi32(0x4444, v, m_lo);
      v = _mm512_mask_blend_epi32(0x8888, v, m_hi);
      _mm512_store_si512(scm[4 * k], v);
    }
    for (int j = 0; j < 16; ++j) {
      const __m128i b = _mm_load_si128(reinterpret_cast<const __m128i*>(scm[j]));
      const __m256 sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)), mn = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(b, 8)));
      const __m512 as = _mm512_castps256_ps512(_mm256_mul_ps(sc, _mm256_mul_ps(_mm256_set1_ps(qhalf(col + 16 * j)), dx)));
      const __m256 o = _mm256_mul_ps(mn, _mm256_set1_ps(-qhalf(col + 16 * j + 2)));  // -dmin m per sub-block
      const char* c = col + 256 + 128 * j;
      const __m512i v0 = _mm512_loadu_si512(c), v1 = _mm512_loadu_si512(c + 64);
      const __m512i z = _mm512_setzero_si512();
      const __m512i d02 = _mm512_dpbusd_epi32(z, _mm512_and_si512(v0, m), x02);
      const __m512i d13 = _mm512_dpbusd_epi32(z, _mm512_and_si512(_mm512_srli_epi16(v0, 4), m), x13);
      const __m512i d46 = _mm512_dpbusd_epi32(z, _mm512_and_si512(v1, m), x46);
      const __m512i d57 = _mm512_dpbusd_epi32(z, _mm512_and_si512(_mm512_srli_epi16(v1, 4), m), x57);
      __m512 r = _mm512_zextps256_ps512(_mm256_mul_ps(o, ds));  // the mins' term
      r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d02), _mm512_permutexvar_ps(i02, as), r);
      r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d13), _mm512_permutexvar_ps(i13, as), r);
      r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d46), _mm512_permutexvar_ps(i46, as), r);
      r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d57), _mm512_permutexvar_ps(i57, as), r);
      acc[0][j] = _mm512_add_ps(acc[0][j], r);
    }
  }
};

// y[t0 + t][r + j] (+)= row r + j . token t0 + t for the group at row r and
// TM tokens; `prefetch` on the first pass over the group.
template <class G, int TM>
void decode_group(const LinearJob& jb, int64_t r, int64_t t0, const TokenActs* x, bool prefetch) {
  const int64_t nb = jb.cols / G::kElems;
  const char* g = static_cast<const char*>(jb.w) + r / 16 * nb * G::kBytes;
  __m512 acc[TM][G::kAccs];
  for (int t = 0; t < TM; ++t)
    for (int p = 0; p < G::kAccs; ++p) acc[t][p] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const char* col = g + b * G::kBytes;
    // Far ahead into L2 (the memory's latency), near ahead into L1.
    if (prefetch) {
      for (int64_t c = 0; c < G::kBytes; c += 64) {
        _mm_prefetch(col + kFarPrefetch + c, _MM_HINT_T1);
        _mm_prefetch(col + kNearPrefetch + c, _MM_HINT_T0);
      }
    }
    G::template column<TM>(col, x, b, acc);
  }
  for (int t = 0; t < TM; ++t) {
    alignas(64) float lanes[G::kAccs][16];
    for (int p = 0; p < G::kAccs; ++p) _mm512_store_ps(lanes[p], acc[t][p]);
    float* y = jb.y + (t0 + t) * jb.rows + r;
    // 16 * kAccs lanes over 16 rows: row j's are the kAccs lanes from j * kAccs.
    for (int j = 0; j < 16; ++j) {
      const float* l = &lanes[0][0] + j * G::kAccs;
      float v = 0.f;
      for (int i = 0; i < G::kAccs; ++i) v += l[i];
      if (jb.bias) v += jb.bias[r + j];
      y[j] = jb.accumulate ? y[j] + v : v;
    }
  }
}

// The rows of whole groups [g0, g1) (g0 a multiple of 16) for every token: a
// group at a time, so it stays in cache while the token tiles pass over it.
template <class G>
void decode_groups(const LinearJob& jb, int64_t g0, int64_t g1) {
  const int64_t K = jb.cols, nb = K / 32;
  const QuantActs& qx = *jb.qx;
  for (int64_t r = g0; r < g1; r += 16) {
    for (int64_t t0 = 0; t0 < jb.T; t0 += G::kTM) {
      TokenActs x[G::kTM];
      const int tm = jb.T - t0 < G::kTM ? int(jb.T - t0) : G::kTM;
      for (int t = 0; t < tm; ++t)
        x[t] = {qx.q + (t0 + t) * K, qx.d + (t0 + t) * nb, qx.ds + (t0 + t) * nb, qx.s + (t0 + t) * nb};
      if constexpr (G::kTM > 1) {
        if (tm == G::kTM) {
          decode_group<G, G::kTM>(jb, r, t0, x, t0 == 0);
          continue;
        }
      }
      decode_group<G, 1>(jb, r, t0, x, t0 == 0);
    }
  }
}

}  // namespace

void linear_rows_q_avx512vnni(const LinearJob& jb, int64_t r0, int64_t r1) {
  if (jb.T < kQuantPrefillTokens) {
    // Whole groups through the group kernel, the rows around them (a thread's
    // share that starts or ends inside a group, a last partial group) through the tile.
    const int64_t up = (r0 + 15) / 16 * 16, g0 = up < r1 ? up : r1;
    const int64_t down = (r1 < jb.rows ? r1 : jb.rows) / 16 * 16, g1 = down > g0 ? down : g0;
    if (r0 < g0) linear_rows_q<QVnni, Avx512>(jb, r0, g0);
    if (jb.dtype == DType::Q8_0) decode_groups<GroupQ8_0>(jb, g0, g1);
    else if (jb.dtype == DType::Q4_0) decode_groups<GroupQ4_0>(jb, g0, g1);
    else decode_groups<GroupQ4_K>(jb, g0, g1);
    if (g1 < r1) linear_rows_q<QVnni, Avx512>(jb, g1, r1);
    return;
  }
  linear_rows_q<QVnni, Avx512>(jb, r0, r1);
}

}  // namespace dg::detail
#endif  // DG_X86
