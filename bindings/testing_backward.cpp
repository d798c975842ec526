// `testing` additions for the backward kernels (linearBackward is in testing_ops.cpp): each as a synchronous function over
// typed arrays, so test/train/kernels-backward.test.ts can compare it with finite
// differences of a float64 reference. Every length is checked before a kernel runs.
#include "bindings/testing_backward.h"

#include <string>

#include "bindings/convert.h"
#include "core/thread_pool.h"
#include "kernels/ops.h"

namespace dg_bind {
namespace {

[[noreturn]] void Bad(Napi::Env env, const std::string& msg) { ThrowCoded(env, "ERR_ARGUMENT", msg); }

Napi::Float32Array F32(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t n) {
  if (info.Length() <= i || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    Bad(info.Env(), std::string(name) + " must be a Float32Array");
  Napi::Float32Array a = info[i].As<Napi::Float32Array>();
  if (n >= 0 && int64_t(a.ElementLength()) != n)
    Bad(info.Env(), std::string(name) + " has length " + std::to_string(a.ElementLength()) + ", expected " + std::to_string(n));
  return a;
}
Napi::Int32Array I32(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t n) {
  if (info.Length() <= i || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    Bad(info.Env(), std::string(name) + " must be an Int32Array");
  Napi::Int32Array a = info[i].As<Napi::Int32Array>();
  if (int64_t(a.ElementLength()) != n) Bad(info.Env(), std::string(name) + " has the wrong length");
  return a;
}
int64_t Dim(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsNumber()) Bad(info.Env(), std::string(name) + " must be a number");
  const double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 1 && d <= 1 << 20) || d != double(int64_t(d))) Bad(info.Env(), std::string(name) + " must be an integer in [1, 2^20]");
  return int64_t(d);
}
Napi::Float32Array Zeros(Napi::Env env, int64_t n) { return Napi::Float32Array::New(env, size_t(n)); }

// rmsnormBackward(dy, x, w, T, d, eps) -> { dx, dw }
Napi::Value RmsNormBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t T = Dim(info, 3, "T"), d = Dim(info, 4, "d");
  auto dy = F32(info, 0, "dy", T * d), x = F32(info, 1, "x", T * d), w = F32(info, 2, "w", d);
  const float eps = float(info[5].As<Napi::Number>().DoubleValue());
  auto dx = Zeros(env, T * d), dw = Zeros(env, d);
  dg::rmsnorm_backward(dx.Data(), dw.Data(), dy.Data(), x.Data(), w.Data(), T, d, eps);
  Napi::Object o = Napi::Object::New(env);
  o.Set("dx", dx);
  o.Set("dw", dw);
  return o;
}

// ropeBackward(dy, cos, sin, T, nHeads, headDim) -> dx
Napi::Value RopeBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t T = Dim(info, 3, "T"), H = Dim(info, 4, "nHeads"), hd = Dim(info, 5, "headDim");
  if (hd % 2) Bad(env, "headDim must be even");
  auto dy = F32(info, 0, "dy", T * H * hd), c = F32(info, 1, "cos", T * hd / 2), s = F32(info, 2, "sin", T * hd / 2);
  auto dx = Zeros(env, T * H * hd);
  std::copy(dy.Data(), dy.Data() + T * H * hd, dx.Data());
  dg::rope_backward(dx.Data(), c.Data(), s.Data(), T, H, hd);
  return dx;
}

// attentionBackward(dout, q, k, v, T, nHeads, nKvHeads, headDim) -> { dq, dk, dv }; k, v: [kv][T][hd]
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t T = Dim(info, 4, "T"), H = Dim(info, 5, "nHeads"), KV = Dim(info, 6, "nKvHeads"), hd = Dim(info, 7, "headDim");
  if (H % KV) Bad(env, "nHeads must be a multiple of nKvHeads");
  auto g = F32(info, 0, "dout", T * H * hd), q = F32(info, 1, "q", T * H * hd), k = F32(info, 2, "k", KV * T * hd),
       v = F32(info, 3, "v", KV * T * hd);
  auto dq = Zeros(env, T * H * hd), dk = Zeros(env, KV * T * hd), dv = Zeros(env, KV * T * hd);
  dg::attention_backward(dq.Data(), dk.Data(), dv.Data(), g.Data(), q.Data(), k.Data(), v.Data(), T, H, KV, hd,
                         dg::ThreadPool::global());
  Napi::Object o = Napi::Object::New(env);
  o.Set("dq", dq);
  o.Set("dk", dk);
  o.Set("dv", dv);
  return o;
}

// swigluBackward(dout, gate, up) -> { dgate, dup }
Napi::Value SwigluBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto g = F32(info, 0, "dout", -1);
  const int64_t n = int64_t(g.ElementLength());
  auto gate = F32(info, 1, "gate", n), up = F32(info, 2, "up", n);
  auto dgate = Zeros(env, n), dup = Zeros(env, n);
  dg::swiglu_backward(dgate.Data(), dup.Data(), g.Data(), gate.Data(), up.Data(), n);
  Napi::Object o = Napi::Object::New(env);
  o.Set("dgate", dgate);
  o.Set("dup", dup);
  return o;
}

// embeddingBackward(dout, ids, rows, d) -> dtable [rows][d]
Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t rows = Dim(info, 2, "rows"), d = Dim(info, 3, "d");
  auto g = F32(info, 0, "dout", -1);
  const int64_t T = int64_t(g.ElementLength()) / d;
  if (T * d != int64_t(g.ElementLength())) Bad(env, "dout length must be a multiple of d");
  auto ids = I32(info, 1, "ids", T);
  for (int64_t t = 0; t < T; ++t)
    if (ids.Data()[t] < 0 || ids.Data()[t] >= rows) Bad(env, "ids out of range");
  auto table = Zeros(env, rows * d);
  dg::embedding_backward(table.Data(), g.Data(), ids.Data(), T, d);
  return table;
}

// crossEntropy(logits, targets, weights, T, V) -> { loss, dlogits, fusedLoss, fusedDlogits }
// (separate forward + backward, and cross_entropy_forward_backward)
Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t T = Dim(info, 3, "T"), V = Dim(info, 4, "V");
  auto z = F32(info, 0, "logits", T * V), w = F32(info, 2, "weights", T);
  auto y = I32(info, 1, "targets", T);
  for (int64_t t = 0; t < T; ++t)
    if (y.Data()[t] < -1 || y.Data()[t] >= V) Bad(env, "targets out of range");
  std::vector<float> lse(static_cast<size_t>(T));
  auto dz = Zeros(env, T * V), fused = Zeros(env, T * V);
  const double loss = dg::cross_entropy_forward(lse.data(), z.Data(), y.Data(), w.Data(), T, V);
  dg::cross_entropy_backward(dz.Data(), z.Data(), lse.data(), y.Data(), w.Data(), T, V);
  const double fused_loss = dg::cross_entropy_forward_backward(fused.Data(), z.Data(), y.Data(), w.Data(), T, V);
  Napi::Object o = Napi::Object::New(env);
  o.Set("loss", loss);
  o.Set("dlogits", dz);
  o.Set("fusedLoss", fused_loss);
  o.Set("fusedDlogits", fused);
  return o;
}

// kl(baseLogits, logits, weights, T, V) -> { loss, dlogits }
Napi::Value Kl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t T = Dim(info, 3, "T"), V = Dim(info, 4, "V");
  auto zb = F32(info, 0, "baseLogits", T * V), z = F32(info, 1, "logits", T * V), w = F32(info, 2, "weights", T);
  auto dz = Zeros(env, T * V);
  const double loss = dg::kl_forward_backward(dz.Data(), zb.Data(), z.Data(), w.Data(), T, V);
  Napi::Object o = Napi::Object::New(env);
  o.Set("loss", loss);
  o.Set("dlogits", dz);
  return o;
}

}  // namespace

void AddBackwardTestingOps(Napi::Env env, Napi::Object o) {
  o.Set("rmsnormBackward", Napi::Function::New(env, RmsNormBackward, "rmsnormBackward"));
  o.Set("ropeBackward", Napi::Function::New(env, RopeBackward, "ropeBackward"));
  o.Set("attentionBackward", Napi::Function::New(env, AttentionBackward, "attentionBackward"));
  o.Set("swigluBackward", Napi::Function::New(env, SwigluBackward, "swigluBackward"));
  o.Set("embeddingBackward", Napi::Function::New(env, EmbeddingBackward, "embeddingBackward"));
  o.Set("crossEntropy", Napi::Function::New(env, CrossEntropy, "crossEntropy"));
  o.Set("kl", Napi::Function::New(env, Kl, "kl"));
}

}  // namespace dg_bind
