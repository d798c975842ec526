#include "model/layer_train.h"

#include <cstring>

#include "kernels/ops.h"

namespace dg {
namespace {

template <class... V>
void free_all(V&... v) {
  (std::vector<float>().swap(v), ...);
}

// [T][n * hd] -> [n][T][hd] and back.
void to_head_major(float* dst, const float* src, int64_t T, int64_t n, int64_t hd) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < n; ++h) std::memcpy(dst + (h * T + t) * hd, src + (t * n + h) * hd, size_t(hd) * 4);
}
void to_token_major(float* dst, const float* src, int64_t T, int64_t n, int64_t hd) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < n; ++h) std::memcpy(dst + (t * n + h) * hd, src + (h * T + t) * hd, size_t(hd) * 4);
}

void lora_fwd(const LayerPassContext& c, int64_t layer, Projection p, float* y, const float* x, const Linear& lin) {
  if (!c.lora) return;
  if (const LoraTrainFactors* f = c.lora->factors(layer, p))
    lora_forward(y, x, c.T, lin.w.cols, lin.w.rows, *c.lora, *f, layer, p, c.pool);
}

// dx += dy W (frozen) and the LoRA gradients of (layer, p).
void proj_bwd(const LayerPassContext& c, int64_t layer, Projection p, float* dx, const float* dy, const float* x,
              const Linear& lin) {
  linear_backward(dx, nullptr, nullptr, dy, nullptr, lin.w, c.T, c.pool);
  if (!c.lora) return;
  if (const LoraTrainFactors* f = c.lora->factors(layer, p))
    lora_backward(dx, dy, x, c.T, lin.w.cols, lin.w.rows, *c.lora, *f, layer, p, c.pool);
}

}  // namespace

void LayerActivations::release_all_but_input() { free_all(xn1, q, k, v, att, x_mid, xn2, gate, up, h); }

uint64_t LayerActivations::bytes() const {
  uint64_t n = 0;
  for (const auto* v : {&x_in, &xn1, &q, &k, &v, &att, &x_mid, &xn2, &gate, &up, &h}) n += v->capacity();
  return n * sizeof(float);
}

void layer_forward(const LayerPassContext& c, int64_t layer, float* x, LayerActivations& a) {
  const ModelConfig& m = c.cfg;
  const LayerWeights& L = c.w.layers[size_t(layer)];
  const int64_t T = c.T, d = m.hidden, hd = m.head_dim, qo = m.n_heads * hd, kvo = m.n_kv_heads * hd;
  const int64_t I = m.intermediate;
  a.x_in.assign(x, x + T * d);
  a.xn1.resize(size_t(T * d));
  a.q.resize(size_t(T * qo));
  a.k.resize(size_t(T * kvo));
  a.v.resize(size_t(T * kvo));
  a.att.resize(size_t(T * qo));
  a.x_mid.resize(size_t(T * d));
  a.xn2.resize(size_t(T * d));
  a.gate.resize(size_t(T * I));
  a.up.resize(size_t(T * I));
  a.h.resize(size_t(T * I));
  thread_local std::vector<float> kt, vt;
  kt.resize(size_t(T * kvo));
  vt.resize(size_t(T * kvo));

  rmsnorm_forward(a.xn1.data(), x, L.input_norm.data(), T, d, m.rms_eps);
  const LinearOutput qkv[3] = {{a.q.data(), L.q.w, L.q.bias_ptr(), false},
                               {kt.data(), L.k.w, L.k.bias_ptr(), false},
                               {vt.data(), L.v.w, L.v.bias_ptr(), false}};
  linear_forward_many(qkv, 3, a.xn1.data(), T, c.pool);
  lora_fwd(c, layer, Projection::Q, a.q.data(), a.xn1.data(), L.q);
  lora_fwd(c, layer, Projection::K, kt.data(), a.xn1.data(), L.k);
  lora_fwd(c, layer, Projection::V, vt.data(), a.xn1.data(), L.v);
  rope_forward(a.q.data(), c.cos_t, c.sin_t, T, m.n_heads, hd);
  rope_forward(kt.data(), c.cos_t, c.sin_t, T, m.n_kv_heads, hd);
  to_head_major(a.k.data(), kt.data(), T, m.n_kv_heads, hd);
  to_head_major(a.v.data(), vt.data(), T, m.n_kv_heads, hd);
  attention_forward(a.att.data(), a.q.data(), a.k.data(), a.v.data(), T, T, 0, m.n_heads, m.n_kv_heads, hd, c.pool);
  std::memcpy(a.x_mid.data(), x, size_t(T * d) * 4);
  linear_forward(a.x_mid.data(), a.att.data(), L.o.w, L.o.bias_ptr(), T, c.pool, /*accumulate=*/true);
  lora_fwd(c, layer, Projection::O, a.x_mid.data(), a.att.data(), L.o);

  rmsnorm_forward(a.xn2.data(), a.x_mid.data(), L.post_attention_norm.data(), T, d, m.rms_eps);
  const LinearOutput gu[2] = {{a.gate.data(), L.gate.w, L.gate.bias_ptr(), false},
                              {a.up.data(), L.up.w, L.up.bias_ptr(), false}};
  linear_forward_many(gu, 2, a.xn2.data(), T, c.pool);
  lora_fwd(c, layer, Projection::Gate, a.gate.data(), a.xn2.data(), L.gate);
  lora_fwd(c, layer, Projection::Up, a.up.data(), a.xn2.data(), L.up);
  swiglu_forward(a.h.data(), a.gate.data(), a.up.data(), T * I);
  std::memcpy(x, a.x_mid.data(), size_t(T * d) * 4);
  linear_forward(x, a.h.data(), L.down.w, L.down.bias_ptr(), T, c.pool, /*accumulate=*/true);
  lora_fwd(c, layer, Projection::Down, x, a.h.data(), L.down);
}

void layer_backward(const LayerPassContext& c, int64_t layer, const LayerActivations& a, float* dx) {
  const ModelConfig& m = c.cfg;
  const LayerWeights& L = c.w.layers[size_t(layer)];
  const int64_t T = c.T, d = m.hidden, hd = m.head_dim, qo = m.n_heads * hd, kvo = m.n_kv_heads * hd;
  const int64_t I = m.intermediate;
  thread_local std::vector<float> dh, dgate, dup, dxn, datt, dq, dk, dv, dkt, dvt;
  // MLP: x_out = x_mid + down(h); dx (= d x_out) flows to x_mid unchanged.
  dh.assign(size_t(T * I), 0.f);
  proj_bwd(c, layer, Projection::Down, dh.data(), dx, a.h.data(), L.down);
  dgate.assign(size_t(T * I), 0.f);
  dup.assign(size_t(T * I), 0.f);
  swiglu_backward(dgate.data(), dup.data(), dh.data(), a.gate.data(), a.up.data(), T * I);
  dxn.assign(size_t(T * d), 0.f);
  proj_bwd(c, layer, Projection::Gate, dxn.data(), dgate.data(), a.xn2.data(), L.gate);
  proj_bwd(c, layer, Projection::Up, dxn.data(), dup.data(), a.xn2.data(), L.up);
  rmsnorm_backward(dx, nullptr, dxn.data(), a.x_mid.data(), L.post_attention_norm.data(), T, d, m.rms_eps);

  // Attention: x_mid = x_in + o_proj(att).
  datt.assign(size_t(T * qo), 0.f);
  proj_bwd(c, layer, Projection::O, datt.data(), dx, a.att.data(), L.o);
  dq.assign(size_t(T * qo), 0.f);
  dkt.assign(size_t(T * kvo), 0.f);
  dvt.assign(size_t(T * kvo), 0.f);
  attention_backward(dq.data(), dkt.data(), dvt.data(), datt.data(), a.q.data(), a.k.data(), a.v.data(), T, m.n_heads,
                     m.n_kv_heads, hd, c.pool);
  dk.resize(size_t(T * kvo));
  dv.resize(size_t(T * kvo));
  to_token_major(dk.data(), dkt.data(), T, m.n_kv_heads, hd);
  to_token_major(dv.data(), dvt.data(), T, m.n_kv_heads, hd);
  rope_backward(dq.data(), c.cos_t, c.sin_t, T, m.n_heads, hd);
  rope_backward(dk.data(), c.cos_t, c.sin_t, T, m.n_kv_heads, hd);
  dxn.assign(size_t(T * d), 0.f);
  proj_bwd(c, layer, Projection::Q, dxn.data(), dq.data(), a.xn1.data(), L.q);
  proj_bwd(c, layer, Projection::K, dxn.data(), dk.data(), a.xn1.data(), L.k);
  proj_bwd(c, layer, Projection::V, dxn.data(), dv.data(), a.xn1.data(), L.v);
  rmsnorm_backward(dx, nullptr, dxn.data(), a.x_in.data(), L.input_norm.data(), T, d, m.rms_eps);
}

}  // namespace dg
