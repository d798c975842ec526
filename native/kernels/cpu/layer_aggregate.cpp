// Multi-layer aggregation of hidden states (DESIGN.md "Security modules"):
// attention over layers, mean, last and learned softmax weights, each forward
// beside its backward. h is layer-major [m][N][d]; see ops.h for the math.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/ops.h"

namespace dg {
namespace {

inline float dot(const float* a, const float* b, int64_t d) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= d; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  for (; i < d; ++i) acc[0] += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// Tokens per pool chunk for O(m d) per-token loops.
int64_t token_grain(int64_t m, int64_t d) { return std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(1, m * d)); }

}  // namespace

void layer_attention_forward(float* out, const LayerAttentionSaved& s, const float* h, int64_t m, int64_t N,
                             int64_t d, const LayerAttentionParams& p, ThreadPool& pool) {
  if (m <= 0 || N < 0 || d <= 0) throw Error("ERR_ARGUMENT", "layer_attention_forward: bad dimensions");
  if (N == 0) return;
  const int64_t plane = N * d;
  const float inv_m = 1.f / float(m), c = 1.f / std::sqrt(float(d));
  // mu = mean_l h_l
  pool.parallel_for(N, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* mu = s.mu + t * d;
      std::memcpy(mu, h + t * d, size_t(d) * 4);
      for (int64_t l = 1; l < m; ++l) {
        const float* hl = h + l * plane + t * d;
        for (int64_t i = 0; i < d; ++i) mu[i] += hl[i];
      }
      for (int64_t i = 0; i < d; ++i) mu[i] *= inv_m;
    }
  }, token_grain(m, d));
  const Matrix wq{p.wq, DType::F32, d, d}, wk{p.wk, DType::F32, d, d}, wv{p.wv, DType::F32, d, d},
      wo{p.wo, DType::F32, d, d};
  linear_forward(s.q, s.mu, wq, p.bq, N, pool);
  // u = Wk^T q: the input-gradient product of a linear layer.
  std::fill(s.u, s.u + plane, 0.f);
  linear_backward(s.u, nullptr, nullptr, s.q, nullptr, wk, N, pool);
  pool.parallel_for(N, [&](int64_t t0, int64_t t1) {
    std::vector<float> sc(static_cast<size_t>(m));
    for (int64_t t = t0; t < t1; ++t) {
      const float qb = dot(s.q + t * d, p.bk, d);
      float mx = -INFINITY;
      for (int64_t l = 0; l < m; ++l) {
        sc[l] = c * (dot(s.u + t * d, h + l * plane + t * d, d) + qb);
        mx = std::max(mx, sc[l]);
      }
      float sum = 0.f;
      for (int64_t l = 0; l < m; ++l) sum += (sc[l] = std::exp(sc[l] - mx));
      float* alpha = s.alpha + t * m;
      float* hbar = s.hbar + t * d;
      std::fill(hbar, hbar + d, 0.f);
      for (int64_t l = 0; l < m; ++l) {
        alpha[l] = sc[l] / sum;
        const float* hl = h + l * plane + t * d;
        for (int64_t i = 0; i < d; ++i) hbar[i] += alpha[l] * hl[i];
      }
    }
  }, token_grain(m, d));
  linear_forward(s.o, s.hbar, wv, p.bv, N, pool);
  linear_forward(out, s.o, wo, p.bo, N, pool);
}

void layer_attention_backward(float* dh, const LayerAttentionGrads& g, const float* dout, const LayerAttentionSaved& s,
                              const float* h, int64_t m, int64_t N, int64_t d, const LayerAttentionParams& p,
                              ThreadPool& pool) {
  if (m <= 0 || N < 0 || d <= 0) throw Error("ERR_ARGUMENT", "layer_attention_backward: bad dimensions");
  if (N == 0) return;
  const int64_t plane = N * d;
  const float inv_m = 1.f / float(m), c = 1.f / std::sqrt(float(d));
  const Matrix wq{p.wq, DType::F32, d, d}, wk{p.wk, DType::F32, d, d}, wv{p.wv, DType::F32, d, d},
      wo{p.wo, DType::F32, d, d};
  std::vector<float> d_o(size_t(plane), 0.f), dhbar(size_t(plane), 0.f), du(size_t(plane), 0.f),
      dq(size_t(plane), 0.f), dmu(size_t(plane), 0.f), dssum(static_cast<size_t>(N));
  linear_backward(d_o.data(), g.wo, g.bo, dout, s.o, wo, N, pool);
  linear_backward(dhbar.data(), g.wv, g.bv, d_o.data(), s.hbar, wv, N, pool);
  pool.parallel_for(N, [&](int64_t t0, int64_t t1) {
    std::vector<float> ds(static_cast<size_t>(m));
    for (int64_t t = t0; t < t1; ++t) {
      const float* alpha = s.alpha + t * m;
      const float* dhb = dhbar.data() + t * d;
      const float* ut = s.u + t * d;
      const float ob = dot(d_o.data() + t * d, p.bv, d);
      float weighted = 0.f;
      for (int64_t l = 0; l < m; ++l) {
        ds[l] = dot(dhb, h + l * plane + t * d, d) + ob;  // dalpha_l
        weighted += alpha[l] * ds[l];
      }
      float total = 0.f;
      for (int64_t l = 0; l < m; ++l) total += (ds[l] = alpha[l] * (ds[l] - weighted));
      dssum[t] = total;
      float* dut = du.data() + t * d;
      for (int64_t l = 0; l < m; ++l) {
        const float* hl = h + l * plane + t * d;
        float* dhl = dh + l * plane + t * d;
        const float a = alpha[l], e = c * ds[l];
        for (int64_t i = 0; i < d; ++i) {
          dhl[i] += a * dhb[i] + e * ut[i];
          dut[i] += e * hl[i];
        }
      }
      float* dqt = dq.data() + t * d;
      const float f = c * total;
      for (int64_t i = 0; i < d; ++i) dqt[i] = f * p.bk[i];
    }
  }, token_grain(m, d));
  // bk enters every score as q . bk: dbk = c sum_t (sum_l ds_l) q_t (zero up to
  // rounding, since softmax ignores a shift, but computed as the math says).
  for (int64_t t = 0; t < N; ++t) {
    const float f = c * dssum[size_t(t)];
    const float* qt = s.q + t * d;
    for (int64_t i = 0; i < d; ++i) g.bk[i] += f * qt[i];
  }
  // u = Wk^T q: dq += Wk du, dWk += q^T du (rows of Wk indexed like q).
  linear_forward(dq.data(), du.data(), wk, nullptr, N, pool, true);
  linear_backward(nullptr, g.wk, nullptr, s.q, du.data(), wk, N, pool);
  linear_backward(dmu.data(), g.wq, g.bq, dq.data(), s.mu, wq, N, pool);
  pool.parallel_for(N, [&](int64_t t0, int64_t t1) {
    for (int64_t l = 0; l < m; ++l)
      for (int64_t t = t0; t < t1; ++t) {
        float* dhl = dh + l * plane + t * d;
        const float* dm = dmu.data() + t * d;
        for (int64_t i = 0; i < d; ++i) dhl[i] += dm[i] * inv_m;
      }
  }, token_grain(m, d));
}

void layer_mean_forward(float* out, const float* h, int64_t m, int64_t N, int64_t d) {
  const int64_t plane = N * d;
  const float inv_m = 1.f / float(m);
  std::memcpy(out, h, size_t(plane) * 4);
  for (int64_t l = 1; l < m; ++l)
    for (int64_t i = 0; i < plane; ++i) out[i] += h[l * plane + i];
  for (int64_t i = 0; i < plane; ++i) out[i] *= inv_m;
}

void layer_mean_backward(float* dh, const float* dout, int64_t m, int64_t N, int64_t d) {
  const int64_t plane = N * d;
  const float inv_m = 1.f / float(m);
  for (int64_t l = 0; l < m; ++l)
    for (int64_t i = 0; i < plane; ++i) dh[l * plane + i] += dout[i] * inv_m;
}

void layer_last_forward(float* out, const float* h, int64_t m, int64_t N, int64_t d) {
  std::memcpy(out, h + (m - 1) * N * d, size_t(N * d) * 4);
}

void layer_last_backward(float* dh, const float* dout, int64_t m, int64_t N, int64_t d) {
  float* last = dh + (m - 1) * N * d;
  for (int64_t i = 0; i < N * d; ++i) last[i] += dout[i];
}

void layer_weighted_forward(float* out, float* weights, const float* h, const float* logits, int64_t m, int64_t N,
                            int64_t d) {
  float mx = -INFINITY, sum = 0.f;
  for (int64_t l = 0; l < m; ++l) mx = std::max(mx, logits[l]);
  for (int64_t l = 0; l < m; ++l) sum += (weights[l] = std::exp(logits[l] - mx));
  for (int64_t l = 0; l < m; ++l) weights[l] /= sum;
  const int64_t plane = N * d;
  for (int64_t i = 0; i < plane; ++i) out[i] = weights[0] * h[i];
  for (int64_t l = 1; l < m; ++l)
    for (int64_t i = 0; i < plane; ++i) out[i] += weights[l] * h[l * plane + i];
}

void layer_weighted_backward(float* dh, float* dlogits, const float* dout, const float* h, const float* weights,
                             int64_t m, int64_t N, int64_t d) {
  const int64_t plane = N * d;
  std::vector<double> gl(static_cast<size_t>(m), 0.0);
  double mean = 0;
  for (int64_t l = 0; l < m; ++l) {
    double acc = 0;
    for (int64_t i = 0; i < plane; ++i) {
      acc += double(dout[i]) * h[l * plane + i];
      dh[l * plane + i] += weights[l] * dout[i];
    }
    gl[size_t(l)] = acc;
    mean += weights[l] * acc;
  }
  if (dlogits)
    for (int64_t l = 0; l < m; ++l) dlogits[l] += float(weights[l] * (gl[size_t(l)] - mean));
}

}  // namespace dg
