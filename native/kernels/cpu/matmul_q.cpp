// Linear layers on block-quantized weights (Q8_0, Q4_0, Q4_K; layouts in
// quant/formats.h): the activation quantizer and the portable kernel. The SIMD
// kernels (matmul_q_avx2.cpp, matmul_q_avx512vnni.cpp) compute the same sums.
//
// Every kernel computes, for output row r and token t,
//   y[t][r] = sum over 32-blocks b of dx[t][b] * (a[r][b] * sum_i n[r][b][i] q[t][b][i] + o[r][b] * s[t][b])
// where the weight block is w = a * n + o (n the integer codes: q for Q8_0, n - 8
// for Q4_0 with o = 0; n for Q4_K with a = d sc, o = -dmin m) and x ~= dx * q.
// Integer sums are exact, so the result differs from x . W^T only by the
// activations' rounding (|x - dx q| <= dx / 2 per element) and f32 summation.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/matmul_impl.h"
#include "quant/formats.h"
#include "quant/layout.h"

namespace dg::detail {

void quantize_acts_rows(const float* x, int64_t K, int64_t t0, int64_t t1, int8_t* q, float* d, int32_t* s, float* ds) {
  const int64_t nb = K / 32;
  for (int64_t t = t0; t < t1; ++t) {
    for (int64_t b = 0; b < nb; ++b) {
      const float* xb = x + t * K + 32 * b;
      float amax = 0.f;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(xb[i]));
      const float scale = amax / 127.f, inv = amax > 0.f ? 127.f / amax : 0.f;
      int8_t* qb = q + t * K + 32 * b;
      int32_t sum = 0;
      for (int i = 0; i < 32; ++i) {
        const int v = int(std::lrintf(xb[i] * inv));
        qb[i] = int8_t(v < -127 ? -127 : v > 127 ? 127 : v);
        sum += qb[i];
      }
      d[t * nb + b] = scale;
      s[t * nb + b] = sum;
      ds[t * nb + b] = scale * float(sum);
    }
  }
}

namespace {

// The integer codes n and the affine pair (a, o) of 32-block b of a row.
void decode_block(DType t, const QuantRow& row, int64_t b, int32_t* n, float* a, float* o) {
  if (t == DType::Q8_0) {
    BlockQ8_0 blk;
    read_block(row, t, b, &blk);
    for (int i = 0; i < 32; ++i) n[i] = blk.q[i];
    *a = f16_to_f32(blk.d);
    *o = 0.f;
  } else if (t == DType::Q4_0) {
    BlockQ4_0 blk;
    read_block(row, t, b, &blk);
    for (int i = 0; i < 16; ++i) n[i] = (blk.qs[i] & 15) - 8, n[i + 16] = (blk.qs[i] >> 4) - 8;
    *a = f16_to_f32(blk.d);
    *o = 0.f;
  } else {
    BlockQ4_K blk;
    read_block(row, t, b / 8, &blk);
    const int j = int(b % 8);
    int sc, m;
    q4k_scale_min(blk.scales, j, &sc, &m);
    const uint8_t* q = blk.qs + 32 * (j / 2);
    for (int i = 0; i < 32; ++i) n[i] = (q[i] >> ((j & 1) * 4)) & 15;
    *a = f16_to_f32(blk.d) * float(sc);
    *o = -f16_to_f32(blk.dmin) * float(m);
  }
}

}  // namespace

void linear_rows_q_scalar(const LinearJob& jb, int64_t r0, int64_t r1) {
  const int64_t K = jb.cols, nb = K / 32;
  const QuantActs& x = *jb.qx;
  int32_t n[32];
  for (int64_t r = r0; r < r1; ++r) {
    const QuantRow row = quant_row(jb.w, jb.dtype, jb.rows, K, r);
    float* acc = thread_scratch(jb.T);
    for (int64_t t = 0; t < jb.T; ++t) acc[t] = 0.f;
    for (int64_t b = 0; b < nb; ++b) {
      float a, o;
      decode_block(jb.dtype, row, b, n, &a, &o);
      for (int64_t t = 0; t < jb.T; ++t) {
        const int8_t* q = x.q + t * K + 32 * b;
        int32_t dot = 0;
        for (int i = 0; i < 32; ++i) dot += n[i] * int32_t(q[i]);
        acc[t] += x.d[t * nb + b] * (a * float(dot)) + o * x.ds[t * nb + b];
      }
    }
    const float bias = jb.bias ? jb.bias[r] : 0.f;
    for (int64_t t = 0; t < jb.T; ++t) {
      float& y = jb.y[t * jb.rows + r];
      y = jb.accumulate ? y + (acc[t] + bias) : acc[t] + bias;
    }
  }
}

}  // namespace dg::detail
