// Optimizer primitives over Float32Arrays owned by JavaScript. Both calls run off
// the event loop; the arrays are held by references until the worker finishes,
// and the caller must not touch them meanwhile (lib/train/optimizer.ts awaits).
#include "bindings/train_binding.h"

#include <cmath>
#include <string>
#include <vector>

#include "bindings/convert.h"
#include "core/thread_pool.h"
#include "train/adamw.h"

namespace dg_bind {
namespace {

Napi::Float32Array F32Value(Napi::Env env, Napi::Value v, const std::string& what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    ThrowCoded(env, "ERR_ARGUMENT", what + " must be a Float32Array");
  return v.As<Napi::Float32Array>();
}

double FiniteField(const Napi::Object& o, const char* key, double lo, double hi) {
  const double d = NumberField(o, key);
  if (!(d >= lo && d <= hi))
    ThrowCoded(o.Env(), "ERR_ARGUMENT",
               std::string("field ") + key + " must be a finite number in [" + std::to_string(lo) + ", " +
                   std::to_string(hi) + "]");
  return d;
}

// Keeps typed arrays alive while a worker reads and writes their memory.
struct HeldArrays {
  std::vector<Napi::Reference<Napi::Float32Array>> refs;
  float* hold(Napi::Float32Array a) {
    refs.push_back(Napi::Persistent(a));
    return a.Data();
  }
};

struct AdamWTensor {
  float *p, *g, *m, *v;
  int64_t n;
};

class AdamWWorker : public CodedWorker {
 public:
  AdamWWorker(Napi::Env env, HeldArrays held, std::vector<AdamWTensor> tensors, dg::AdamWConfig cfg, int64_t step)
      : CodedWorker(env), held_(std::move(held)), tensors_(std::move(tensors)), cfg_(cfg), step_(step) {}

 protected:
  void Compute() override {
    for (const AdamWTensor& t : tensors_) dg::adamw_update(t.p, t.g, t.m, t.v, t.n, cfg_, step_, dg::ThreadPool::global());
  }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  HeldArrays held_;
  std::vector<AdamWTensor> tensors_;
  dg::AdamWConfig cfg_;
  int64_t step_;
};

// adamwStep([{ param, grad, m, v }], { lr, beta1, beta2, eps, weightDecay, step }) -> Promise<void>
Napi::Value AdamWStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsArray()) ThrowCoded(env, "ERR_ARGUMENT", "adamwStep(tensors: array, config)");
  Napi::Object c = ArgObject(info, 1, "config");
  dg::AdamWConfig cfg;
  cfg.lr = float(FiniteField(c, "lr", 0, 1e3));
  cfg.beta1 = float(FiniteField(c, "beta1", 0, 0.999999));
  cfg.beta2 = float(FiniteField(c, "beta2", 0, 0.999999999));
  cfg.eps = float(FiniteField(c, "eps", 1e-30, 1));
  cfg.weight_decay = float(FiniteField(c, "weightDecay", 0, 1e3));
  const double step = FiniteField(c, "step", 1, 9007199254740991.0);
  if (step != std::floor(step)) ThrowCoded(env, "ERR_ARGUMENT", "field step must be an integer >= 1");
  Napi::Array list = info[0].As<Napi::Array>();
  HeldArrays held;
  std::vector<AdamWTensor> tensors;
  for (uint32_t i = 0; i < list.Length(); ++i) {
    const std::string at = "tensors[" + std::to_string(i) + "]";
    if (!list.Get(i).IsObject()) ThrowCoded(env, "ERR_ARGUMENT", at + " must be an object");
    Napi::Object o = list.Get(i).As<Napi::Object>();
    Napi::Float32Array arrays[4] = {F32Value(env, o.Get("param"), at + ".param"),
                                    F32Value(env, o.Get("grad"), at + ".grad"), F32Value(env, o.Get("m"), at + ".m"),
                                    F32Value(env, o.Get("v"), at + ".v")};
    const size_t n = arrays[0].ElementLength();
    for (const auto& a : arrays)
      if (a.ElementLength() != n) ThrowCoded(env, "ERR_ARGUMENT", at + ": param, grad, m and v must have one length");
    AdamWTensor t{held.hold(arrays[0]), held.hold(arrays[1]), held.hold(arrays[2]), held.hold(arrays[3]), int64_t(n)};
    tensors.push_back(t);
  }
  auto* w = new AdamWWorker(env, std::move(held), std::move(tensors), cfg, int64_t(step));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

class ClipWorker : public CodedWorker {
 public:
  ClipWorker(Napi::Env env, HeldArrays held, std::vector<std::pair<float*, int64_t>> grads, double max_norm)
      : CodedWorker(env), held_(std::move(held)), grads_(std::move(grads)), max_norm_(max_norm) {}

 protected:
  void Compute() override {
    dg::ThreadPool& pool = dg::ThreadPool::global();
    double sq = 0;
    for (auto& [g, n] : grads_) sq += dg::sum_squares_f64(g, n, pool);
    norm_ = std::sqrt(sq);
    // As torch.nn.utils.clip_grad_norm_: scale by max / (norm + 1e-6) when above.
    if (std::isfinite(max_norm_) && norm_ > max_norm_) {
      const float s = float(max_norm_ / (norm_ + 1e-6));
      for (auto& [g, n] : grads_) dg::scale_inplace(g, n, s, pool);
    }
  }
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, norm_); }

 private:
  HeldArrays held_;
  std::vector<std::pair<float*, int64_t>> grads_;
  double max_norm_;
  double norm_ = 0;
};

// clipGradients(grads: Float32Array[], maxNorm: number | Infinity) -> Promise<norm before clipping>
Napi::Value ClipGradients(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsArray() || !info[1].IsNumber())
    ThrowCoded(env, "ERR_ARGUMENT", "clipGradients(grads: Float32Array[], maxNorm: number)");
  const double max_norm = info[1].As<Napi::Number>().DoubleValue();
  if (!(max_norm > 0)) ThrowCoded(env, "ERR_ARGUMENT", "maxNorm must be > 0 (Infinity: no clipping)");
  Napi::Array list = info[0].As<Napi::Array>();
  HeldArrays held;
  std::vector<std::pair<float*, int64_t>> grads;
  for (uint32_t i = 0; i < list.Length(); ++i) {
    Napi::Float32Array g = F32Value(env, list.Get(i), "grads[" + std::to_string(i) + "]");
    grads.emplace_back(held.hold(g), int64_t(g.ElementLength()));
  }
  auto* w = new ClipWorker(env, std::move(held), std::move(grads), max_norm);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

void InitTrain(Napi::Env env, Napi::Object exports) {
  exports.Set("adamwStep", Napi::Function::New(env, AdamWStep));
  exports.Set("clipGradients", Napi::Function::New(env, ClipGradients));
}

}  // namespace dg_bind
