// The block-quantized linear kernel of quant_tile.h with AVX-512 VNNI (compiled
// with -mavx512f/bw/vl/dq -mavx512vnni -mfma -mf16c): vpdpbusd on 256-bit
// vectors (AVX512VL), which keeps 32 vector registers for a 4 x 4 tile. Signed
// Q8_0 codes are flipped to unsigned (w + 128); the tile starts each integer
// sum at -128 * sum(q) to pay that back.
//
// One token on Q8_0 (decode) has its own kernel over whole 16-row groups
// (quant/layout.h), on 512-bit vectors: per block column, the 16 rows' scales
// are one f16 vector (times dx), and the codes of rows 2p and 2p + 1 one
// 64-byte vector, dotted with the token's 32 codes in both halves. Its 8 int32
// lanes per row start at -16 * sum(q) (so a row's lanes pay back -128 * sum(q)),
// are converted, and are scaled by the row's scale (a vpermps of the scale
// vector) into f32 accumulators: about 3 instructions per 32 weights instead
// of 10, which measured 19.5 -> 26 GB/s streamed (the machine read 27 GB/s).
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

// y[r] (+)= row r . x for the rows of whole groups [g0, g1) (g0 a multiple of 16).
void q8_0_decode_groups(const LinearJob& jb, int64_t g0, int64_t g1) {
  const int64_t K = jb.cols, nb = K / 32, group_bytes = nb * 544;
  const QuantActs& x = *jb.qx;
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  const char* w = static_cast<const char*>(jb.w);
  for (int64_t r = g0; r < g1; r += 16) {
    const char* g = w + r / 16 * group_bytes;
    __m512 acc[8];
    for (int p = 0; p < 8; ++p) acc[p] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const char* col = g + b * 544;  // 16 f16 scales, then 16 x 32 codes
      // Far ahead into L2 (the memory's latency), near ahead into L1.
      for (int c = 0; c < 544; c += 64) {
        _mm_prefetch(col + kFarPrefetch + c, _MM_HINT_T1);
        _mm_prefetch(col + kNearPrefetch + c, _MM_HINT_T0);
      }
      const __m512 sc = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(col))),
                                      _mm512_set1_ps(x.d[b]));
      const __m512i xv = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q + 32 * b)));
      const __m512i init = _mm512_set1_epi32(-16 * x.s[b]);
      for (int p = 0; p < 8; ++p) {
        const __m512i wv = _mm512_xor_si512(_mm512_loadu_si512(col + 32 + 64 * p), flip);
        const __m512 dot = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(init, wv, xv));
        const __m512 s2 = _mm512_permutexvar_ps(_mm512_set_epi32(2 * p + 1, 2 * p + 1, 2 * p + 1, 2 * p + 1, 2 * p + 1,
                                                                 2 * p + 1, 2 * p + 1, 2 * p + 1, 2 * p, 2 * p, 2 * p,
                                                                 2 * p, 2 * p, 2 * p, 2 * p, 2 * p),
                                                sc);
        acc[p] = _mm512_fmadd_ps(dot, s2, acc[p]);
      }
    }
    float* y = jb.y + r;
    for (int p = 0; p < 8; ++p) {
      float s[2] = {qhsum(_mm512_castps512_ps256(acc[p])), qhsum(_mm512_extractf32x8_ps(acc[p], 1))};
      for (int h = 0; h < 2; ++h) {
        const int64_t j = 2 * p + h;
        const float v = s[h] + (jb.bias ? jb.bias[r + j] : 0.f);
        y[j] = jb.accumulate ? y[j] + v : v;
      }
    }
  }
}

}  // namespace

void linear_rows_q_avx512vnni(const LinearJob& jb, int64_t r0, int64_t r1) {
  if (jb.dtype == DType::Q8_0 && jb.T == 1) {
    // Whole groups through the group kernel, the rows around them (a thread's
    // share that starts or ends inside a group, a last partial group) through the tile.
    const int64_t up = (r0 + 15) / 16 * 16, g0 = up < r1 ? up : r1;
    const int64_t down = (r1 < jb.rows ? r1 : jb.rows) / 16 * 16, g1 = down > g0 ? down : g0;
    if (r0 < g0) linear_rows_q<QVnni, Avx512>(jb, r0, g0);
    q8_0_decode_groups(jb, g0, g1);
    if (g1 < r1) linear_rows_q<QVnni, Avx512>(jb, g1, r1);
    return;
  }
  linear_rows_q<QVnni, Avx512>(jb, r0, r1);
}

}  // namespace dg::detail
#endif  // DG_X86
