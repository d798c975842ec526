// trainForward(model, ids, lora | null, options) -> Promise<NativeTrainPass>
// pass.backward({ ceCoef, klCoef, dHidden }) -> Promise<void>; pass.dispose().
// The LoRA factors and their gradients are Float32Arrays owned by JavaScript
// (lib/train/lora.ts): the pass holds references to them from forward until it is
// disposed, reads A/B and accumulates dA/dB off the event loop; the caller must
// not change A/B between a pass's forward and backward (the Trainer awaits both
// before the optimizer step).
#include "bindings/lora_train_binding.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bindings/convert.h"
#include "bindings/model_binding.h"
#include "train/train_pass.h"

namespace dg_bind {
namespace {

Napi::Float32Array F32Field(Napi::Env env, const Napi::Object& o, const char* key, const std::string& where) {
  Napi::Value v = o.Get(key);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    ThrowCoded(env, "ERR_ARGUMENT", where + "." + key + " must be a Float32Array");
  return v.As<Napi::Float32Array>();
}

struct PassState {
  std::shared_ptr<const dg::Transformer> model;
  std::unique_ptr<dg::TrainPass> pass;
  dg::TrainableLora lora;
  bool has_lora = false;
  std::vector<Napi::Reference<Napi::Float32Array>> held;  // keeps the factor arrays alive
  std::atomic<bool> busy{false};
  bool forward_ok = false;
};

// Parses { rank, scale, dropout, seed, factors: [{ layer, target, a, b, ga?, gb? }] }.
void ParseLora(Napi::Env env, const Napi::Object& o, const dg::ModelConfig& c, PassState& st) {
  dg::TrainableLora& l = st.lora;
  l.rank = IntField(o, "rank");
  l.scale = float(NumberField(o, "scale"));
  l.dropout = float(NumberField(o, "dropout"));
  const double seed = NumberField(o, "seed");
  if (l.rank <= 0 || l.rank > 65536) ThrowCoded(env, "ERR_ARGUMENT", "lora.rank must be an integer in [1, 65536]");
  if (!(l.dropout >= 0.f && l.dropout < 1.f)) ThrowCoded(env, "ERR_ARGUMENT", "lora.dropout must be in [0, 1)");
  if (!(seed >= 0 && seed <= 9007199254740991.0)) ThrowCoded(env, "ERR_ARGUMENT", "lora.seed must be a non-negative integer");
  l.seed = uint64_t(seed);
  l.layers.assign(size_t(c.n_layers), {});
  Napi::Value fv = o.Get("factors");
  if (!fv.IsArray()) ThrowCoded(env, "ERR_ARGUMENT", "lora.factors must be an array");
  Napi::Array fa = fv.As<Napi::Array>();
  const int64_t q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  for (uint32_t i = 0; i < fa.Length(); ++i) {
    const std::string at = "lora.factors[" + std::to_string(i) + "]";
    if (!fa.Get(i).IsObject()) ThrowCoded(env, "ERR_ARGUMENT", at + " must be an object");
    Napi::Object f = fa.Get(i).As<Napi::Object>();
    const int64_t layer = IntField(f, "layer");
    if (layer < 0 || layer >= c.n_layers) ThrowCoded(env, "ERR_ARGUMENT", at + ".layer is out of range");
    dg::Projection p;
    if (!dg::parse_projection(StringField(f, "target"), &p)) ThrowCoded(env, "ERR_ARGUMENT", at + ".target is not a projection");
    int64_t out = 0, in = 0;
    switch (p) {
      case dg::Projection::Q: out = q; in = c.hidden; break;
      case dg::Projection::K: case dg::Projection::V: out = kv; in = c.hidden; break;
      case dg::Projection::O: out = c.hidden; in = q; break;
      case dg::Projection::Gate: case dg::Projection::Up: out = c.intermediate; in = c.hidden; break;
      case dg::Projection::Down: out = c.hidden; in = c.intermediate; break;
    }
    dg::LoraTrainFactors& slot = l.layers[size_t(layer)][size_t(p)];
    if (slot.a) ThrowCoded(env, "ERR_ARGUMENT", at + " repeats a (layer, target) pair");
    const size_t na = size_t(l.rank * in), nb = size_t(out * l.rank);
    auto hold = [&](const char* key, size_t n, bool optional) -> float* {
      if (optional && f.Get(key).IsUndefined()) return nullptr;
      Napi::Float32Array a = F32Field(env, f, key, at);
      if (a.ElementLength() != n)
        ThrowCoded(env, "ERR_ARGUMENT", at + "." + key + " has length " + std::to_string(a.ElementLength()) +
                                            ", expected " + std::to_string(n));
      st.held.push_back(Napi::Persistent(a));
      return a.Data();
    };
    slot.a = hold("a", na, false);
    slot.b = hold("b", nb, false);
    slot.ga = hold("ga", na, true);
    slot.gb = hold("gb", nb, true);
  }
  st.has_lora = true;
}

std::vector<float> CopyF32(const Napi::Float32Array& a) { return std::vector<float>(a.Data(), a.Data() + a.ElementLength()); }

class TrainPassObject : public Napi::ObjectWrap<TrainPassObject> {
 public:
  static Napi::FunctionReference ctor;
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeTrainPass",
                       {InstanceMethod<&TrainPassObject::Backward>("backward"),
                        InstanceMethod<&TrainPassObject::Dispose>("dispose")});
  }
  explicit TrainPassObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TrainPassObject>(info) {}
  std::shared_ptr<PassState> state;

 private:
  Napi::Value Backward(const Napi::CallbackInfo& info);
  void Dispose(const Napi::CallbackInfo&) { state.reset(); }
};
Napi::FunctionReference TrainPassObject::ctor;

class ForwardWorker : public CodedWorker {
 public:
  ForwardWorker(Napi::Env env, std::shared_ptr<PassState> st) : CodedWorker(env), st_(std::move(st)) {}

 protected:
  void Compute() override {
    res_ = &st_->pass->forward(st_->has_lora ? &st_->lora : nullptr);
    st_->forward_ok = true;
  }
  Napi::Value Result(Napi::Env env) override {
    st_->busy = false;
    Napi::Object obj = TrainPassObject::ctor.New({});
    TrainPassObject::Unwrap(obj)->state = st_;
    const int64_t T = st_->pass->length(), d = st_->model->config().hidden;
    obj.Set("ce", res_->ce);
    obj.Set("kl", res_->kl);
    obj.Set("activationBytes", double(res_->activation_bytes));
    const size_t n_cap = res_->hidden.size() / size_t(T * d);
    Napi::Array hidden = Napi::Array::New(env, n_cap);
    for (size_t i = 0; i < n_cap; ++i) {
      Napi::Float32Array a = Napi::Float32Array::New(env, size_t(T * d));
      std::memcpy(a.Data(), res_->hidden.data() + i * size_t(T * d), size_t(T * d) * 4);
      hidden.Set(uint32_t(i), a);
    }
    obj.Set("hidden", hidden);
    if (!res_->logits.empty()) {
      Napi::Float32Array a = Napi::Float32Array::New(env, res_->logits.size());
      std::memcpy(a.Data(), res_->logits.data(), res_->logits.size() * 4);
      obj.Set("logits", a);
    }
    return obj;
  }
  void OnError(const Napi::Error& e) override {
    st_->busy = false;
    CodedWorker::OnError(e);
  }

 private:
  std::shared_ptr<PassState> st_;
  const dg::TrainPassResult* res_ = nullptr;
};

class BackwardWorker : public CodedWorker {
 public:
  BackwardWorker(Napi::Env env, std::shared_ptr<PassState> st, float ce, float kl, std::vector<std::vector<float>> dh)
      : CodedWorker(env), st_(std::move(st)), ce_(ce), kl_(kl), dh_(std::move(dh)) {}

 protected:
  void Compute() override {
    std::vector<const float*> ptrs;
    for (const auto& v : dh_) ptrs.push_back(v.empty() ? nullptr : v.data());
    st_->pass->backward(ce_, kl_, ptrs);
  }
  Napi::Value Result(Napi::Env env) override {
    st_->busy = false;
    return env.Undefined();
  }
  void OnError(const Napi::Error& e) override {
    st_->busy = false;
    CodedWorker::OnError(e);
  }

 private:
  std::shared_ptr<PassState> st_;
  float ce_, kl_;
  std::vector<std::vector<float>> dh_;
};

// backward({ ceCoef, klCoef, dHidden?: (Float32Array | null)[] }) -> Promise<void>
Napi::Value TrainPassObject::Backward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!state) ThrowCoded(env, "ERR_DISPOSED", "this training pass has been disposed");
  Napi::Object o = ArgObject(info, 0, "backward options");
  const double ce = NumberField(o, "ceCoef"), kl = NumberField(o, "klCoef");
  if (!std::isfinite(ce) || !std::isfinite(kl)) ThrowCoded(env, "ERR_ARGUMENT", "ceCoef and klCoef must be finite");
  const int64_t T = state->pass->length(), d = state->model->config().hidden;
  std::vector<std::vector<float>> dh;
  Napi::Value dv = o.Get("dHidden");
  if (!dv.IsUndefined() && !dv.IsNull()) {
    if (!dv.IsArray()) ThrowCoded(env, "ERR_ARGUMENT", "dHidden must be an array");
    Napi::Array a = dv.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i) {
      Napi::Value e = a.Get(i);
      if (e.IsNull() || e.IsUndefined()) {
        dh.emplace_back();
        continue;
      }
      if (!e.IsTypedArray() || e.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array ||
          int64_t(e.As<Napi::Float32Array>().ElementLength()) != T * d)
        ThrowCoded(env, "ERR_ARGUMENT", "dHidden[" + std::to_string(i) + "] must be a Float32Array of length T * hiddenSize = " + std::to_string(T * d));
      dh.push_back(CopyF32(e.As<Napi::Float32Array>()));
    }
  }
  bool expected = false;
  if (!state->busy.compare_exchange_strong(expected, true))
    ThrowCoded(env, "ERR_SESSION_BUSY", "this training pass is already running; await it");
  auto* w = new BackwardWorker(env, state, float(ce), float(kl), std::move(dh));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// trainForward(model, ids: Int32Array, lora | null, { capture, targets?, ceWeights?, klWeights?, recompute, returnLogits })
Napi::Value TrainForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4) ThrowCoded(env, "ERR_ARGUMENT", "trainForward(model, ids, lora, options)");
  auto st = std::make_shared<PassState>();
  st->model = UnwrapModel(env, info[0], "model");
  if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    ThrowCoded(env, "ERR_ARGUMENT", "trainForward: ids must be an Int32Array");
  Napi::Int32Array ids = info[1].As<Napi::Int32Array>();
  const dg::ModelConfig& c = st->model->config();
  if (info[2].IsObject()) ParseLora(env, info[2].As<Napi::Object>(), c, *st);
  else if (!info[2].IsNull()) ThrowCoded(env, "ERR_ARGUMENT", "trainForward: lora must be an object or null");
  Napi::Object o = ArgObject(info, 3, "trainForward options");
  dg::TrainPassOptions opts;
  Napi::Value cap = o.Get("capture");
  if (!cap.IsArray()) ThrowCoded(env, "ERR_ARGUMENT", "capture must be an array of hidden-state indices");
  Napi::Array ca = cap.As<Napi::Array>();
  for (uint32_t i = 0; i < ca.Length(); ++i) {
    if (!ca.Get(i).IsNumber()) ThrowCoded(env, "ERR_ARGUMENT", "capture entries must be integers");
    opts.capture.push_back(ca.Get(i).As<Napi::Number>().Int32Value());
  }
  Napi::Value tv = o.Get("targets");
  if (!tv.IsUndefined()) {
    if (!tv.IsTypedArray() || tv.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      ThrowCoded(env, "ERR_ARGUMENT", "targets must be an Int32Array");
    Napi::Int32Array t = tv.As<Napi::Int32Array>();
    opts.targets.assign(t.Data(), t.Data() + t.ElementLength());
    opts.ce_weights = CopyF32(F32Field(env, o, "ceWeights", "options"));
  }
  if (!o.Get("klWeights").IsUndefined()) opts.kl_weights = CopyF32(F32Field(env, o, "klWeights", "options"));
  opts.recompute = BoolField(o, "recompute");
  opts.return_logits = BoolField(o, "returnLogits");
  std::vector<int32_t> tokens(ids.Data(), ids.Data() + ids.ElementLength());
  Guarded(env, [&] { st->pass = std::make_unique<dg::TrainPass>(st->model, std::move(tokens), std::move(opts)); });
  st->busy = true;
  auto* w = new ForwardWorker(env, st);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

void InitLoraTrain(Napi::Env env, Napi::Object exports) {
  TrainPassObject::ctor = Napi::Persistent(TrainPassObject::Define(env));
  exports.Set("trainForward", Napi::Function::New(env, TrainForward));
}

}  // namespace dg_bind
