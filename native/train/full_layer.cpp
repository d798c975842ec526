#include "train/full_layer.h"

#include "kernels/ops.h"

namespace dg {
namespace {

// [T][n * hd] <- [n][T][hd] (the attention kernels' k/v layout back to token-major).
void to_token_major(float* dst, const float* src, int64_t T, int64_t n, int64_t hd) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < n; ++h)
      for (int64_t i = 0; i < hd; ++i) dst[(t * n + h) * hd + i] = src[(h * T + t) * hd + i];
}

}  // namespace

void full_layer_backward(const LayerPassContext& c, int64_t layer, const LayerActivations& a, float* dx,
                         const LayerGrads& g) {
  const ModelConfig& m = c.cfg;
  const LayerWeights& L = c.w.layers[size_t(layer)];
  const int64_t T = c.T, d = m.hidden, hd = m.head_dim, qo = m.n_heads * hd, kvo = m.n_kv_heads * hd;
  const int64_t I = m.intermediate;
  ThreadPool& pool = c.pool;
  thread_local std::vector<float> dh, dgate, dup, dxn, datt, dq, dk, dv, dkt, dvt;
  // MLP: x_out = x_mid + down(h), h = silu(gate) * up, gate/up = proj(xn2), xn2 = rmsnorm(x_mid).
  dh.assign(size_t(T * I), 0.f);
  linear_backward(dh.data(), g.down, g.down_bias, dx, a.h.data(), L.down.w, T, pool);
  dgate.assign(size_t(T * I), 0.f);
  dup.assign(size_t(T * I), 0.f);
  swiglu_backward(dgate.data(), dup.data(), dh.data(), a.gate.data(), a.up.data(), T * I);
  dxn.assign(size_t(T * d), 0.f);
  linear_backward(dxn.data(), g.gate, g.gate_bias, dgate.data(), a.xn2.data(), L.gate.w, T, pool);
  linear_backward(dxn.data(), g.up, g.up_bias, dup.data(), a.xn2.data(), L.up.w, T, pool);
  rmsnorm_backward(dx, g.post_attention_norm, dxn.data(), a.x_mid.data(), L.post_attention_norm.data(), T, d,
                   m.rms_eps);

  // Attention: x_mid = x_in + o_proj(att), att = attention(rope(q), rope(k), v).
  datt.assign(size_t(T * qo), 0.f);
  linear_backward(datt.data(), g.o, g.o_bias, dx, a.att.data(), L.o.w, T, pool);
  dq.assign(size_t(T * qo), 0.f);
  dkt.assign(size_t(T * kvo), 0.f);
  dvt.assign(size_t(T * kvo), 0.f);
  attention_backward(dq.data(), dkt.data(), dvt.data(), datt.data(), a.q.data(), a.k.data(), a.v.data(), T, m.n_heads,
                     m.n_kv_heads, hd, pool);
  dk.resize(size_t(T * kvo));
  dv.resize(size_t(T * kvo));
  to_token_major(dk.data(), dkt.data(), T, m.n_kv_heads, hd);
  to_token_major(dv.data(), dvt.data(), T, m.n_kv_heads, hd);
  rope_backward(dq.data(), c.cos_t, c.sin_t, T, m.n_heads, hd);
  rope_backward(dk.data(), c.cos_t, c.sin_t, T, m.n_kv_heads, hd);
  dxn.assign(size_t(T * d), 0.f);
  linear_backward(dxn.data(), g.q, g.q_bias, dq.data(), a.xn1.data(), L.q.w, T, pool);
  linear_backward(dxn.data(), g.k, g.k_bias, dk.data(), a.xn1.data(), L.k.w, T, pool);
  linear_backward(dxn.data(), g.v, g.v_bias, dv.data(), a.xn1.data(), L.v.w, T, pool);
  rmsnorm_backward(dx, g.input_norm, dxn.data(), a.x_in.data(), L.input_norm.data(), T, d, m.rms_eps);
}

}  // namespace dg
