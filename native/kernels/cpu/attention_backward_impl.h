// Backward of causal attention for one query head over its kv head's [T][hd] K/V,
// written as plain loops over raw pointers so the ISA files
// (attention_backward_avx2.cpp / _avx512.cpp) let the compiler vectorize them
// with their own -m flags; attention.cpp compiles the same code for the scalar
// path. Same linkage rule as matmul_impl.h: only builtins, no std:: templates.
#pragma once
#include <cstdint>

namespace dg::detail {

struct AttentionBackwardHead {
  float* dq;          // [T] rows of ld floats (this head's slice)
  float* dk;          // [T][hd] of this head's kv head (accumulated over its query heads)
  float* dv;          // [T][hd]
  const float* dout;  // [T] rows of ld
  const float* q;     // [T] rows of ld
  const float* k;     // [T][hd]
  const float* v;     // [T][hd]
  int64_t T, ld, hd;
  float scale;
  float* scratch;     // 2 * T floats
};

void attention_backward_head_scalar(const AttentionBackwardHead& a);
void attention_backward_head_avx2(const AttentionBackwardHead& a);
void attention_backward_head_avx512(const AttentionBackwardHead& a);

namespace {

inline float ab_dot(const float* a, const float* b, int64_t n) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += a[i + j] * b[i + j];
  for (; i < n; ++i) acc[0] += a[i] * b[i];
  float s = 0.f;
  for (int j = 0; j < 16; ++j) s += acc[j];
  return s;
}

// Per query row t: p = softmax(scale q_t . K[0..t]) recomputed; dP_j = dout_t . v_j;
// D = sum_j p_j dP_j; dS_j = p_j (dP_j - D); dv_j += p_j dout_t; dq_t += scale sum_j dS_j k_j;
// dk_j += scale dS_j q_t.
inline void attention_backward_head(const AttentionBackwardHead& a) {
  const int64_t hd = a.hd;
  float* p = a.scratch;
  float* dp = a.scratch + a.T;
  for (int64_t t = 0; t < a.T; ++t) {
    const float* qt = a.q + t * a.ld;
    const float* gt = a.dout + t * a.ld;
    float* dqt = a.dq + t * a.ld;
    const int64_t n = t + 1;
    float mx = -3.4e38f;
    for (int64_t j = 0; j < n; ++j) {
      p[j] = ab_dot(qt, a.k + j * hd, hd) * a.scale;
      mx = p[j] > mx ? p[j] : mx;
    }
    float sum = 0.f;
    for (int64_t j = 0; j < n; ++j) sum += (p[j] = __builtin_expf(p[j] - mx));
    const float inv = 1.f / sum;
    float D = 0.f;
    for (int64_t j = 0; j < n; ++j) {
      p[j] *= inv;
      dp[j] = ab_dot(gt, a.v + j * hd, hd);
      D += p[j] * dp[j];
      float* dvj = a.dv + j * hd;
      const float pj = p[j];
      for (int64_t i = 0; i < hd; ++i) dvj[i] += pj * gt[i];
    }
    for (int64_t j = 0; j < n; ++j) {
      const float ds = p[j] * (dp[j] - D) * a.scale;
      const float* kj = a.k + j * hd;
      float* dkj = a.dk + j * hd;
      for (int64_t i = 0; i < hd; ++i) {
        dqt[i] += ds * kj[i];
        dkj[i] += ds * qt[i];
      }
    }
  }
}

}  // namespace
}  // namespace dg::detail
