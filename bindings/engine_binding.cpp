// Engine-level functions that need no model: sampling, CPU and memory facts.
#include "bindings/engine_binding.h"

#include <cmath>
#include <string>

#include "bindings/convert.h"
#include "core/bandwidth.h"
#include "core/cpu_features.h"
#include "core/thread_pool.h"
#include "kernels/ops.h"

namespace dg_bind {
namespace {

// sampleToken(logits: Float32Array, { temperature?, topK?, topP? }, u) -> token id.
// Absent fields take the defaults of SamplingParams; out-of-range values are
// rejected here rather than quietly clamped by the kernel.
Napi::Value SampleToken(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsTypedArray() ||
      info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array || !info[1].IsObject() || !info[2].IsNumber())
    ThrowCoded(env, "ERR_ARGUMENT", "sampleToken(logits: Float32Array, params, u: number)");
  Napi::Float32Array logits = info[0].As<Napi::Float32Array>();
  if (logits.ElementLength() == 0) ThrowCoded(env, "ERR_ARGUMENT", "sampleToken: logits must not be empty");
  Napi::Object o = info[1].As<Napi::Object>();
  auto field = [&](const char* key, double fallback) {
    Napi::Value v = o.Get(key);
    if (v.IsUndefined()) return fallback;
    if (!v.IsNumber()) ThrowCoded(env, "ERR_ARGUMENT", std::string("sampleToken: params.") + key + " must be a number");
    return v.As<Napi::Number>().DoubleValue();
  };
  const double temperature = field("temperature", 0.0), top_k = field("topK", 0.0), top_p = field("topP", 1.0);
  if (!(temperature >= 0 && std::isfinite(temperature)))
    ThrowCoded(env, "ERR_ARGUMENT", "sampleToken: params.temperature must be a finite number >= 0");
  if (!(top_k >= 0 && top_k <= 2147483647.0) || top_k != std::floor(top_k))
    ThrowCoded(env, "ERR_ARGUMENT", "sampleToken: params.topK must be an integer >= 0 (0: off)");
  if (!(top_p > 0 && top_p <= 1)) ThrowCoded(env, "ERR_ARGUMENT", "sampleToken: params.topP must be in (0, 1] (1: off)");
  const double u = info[2].As<Napi::Number>().DoubleValue();
  if (!(u >= 0 && u < 1)) ThrowCoded(env, "ERR_ARGUMENT", "sampleToken: u must be in [0, 1)");
  dg::SamplingParams p;
  p.temperature = float(temperature);
  p.top_k = int32_t(top_k);
  p.top_p = float(top_p);
  return Guarded(env, [&] {
    return Napi::Number::New(env, dg::sample_token(logits.Data(), int64_t(logits.ElementLength()), p, u));
  });
}

Napi::Value SystemInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const dg::CpuFeatures& f = dg::cpu_features();
  Napi::Object o = Napi::Object::New(env);
  o.Set("isa", dg::isa_name(dg::active_isa()));
  o.Set("bestIsa", dg::isa_name(dg::best_isa()));
  o.Set("threads", dg::ThreadPool::global().size());
  o.Set("avx2", f.avx2);
  o.Set("avx512f", f.avx512f);
  o.Set("avx512bf16", f.avx512bf16);
  return o;
}

// measureBandwidth(bytes, repeats) -> Promise<{ readGBps, copyGBps }> (runs off the event loop)
class BandwidthWorker : public CodedWorker {
 public:
  BandwidthWorker(Napi::Env env, uint64_t bytes, int repeats) : CodedWorker(env), bytes_(bytes), repeats_(repeats) {}

 protected:
  void Compute() override { r_ = dg::measure_bandwidth(bytes_, repeats_); }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("readGBps", r_.read_gbps);
    o.Set("copyGBps", r_.copy_gbps);
    return o;
  }

 private:
  uint64_t bytes_;
  int repeats_;
  dg::BandwidthResult r_{};
};

Napi::Value MeasureBandwidth(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber())
    ThrowCoded(env, "ERR_ARGUMENT", "measureBandwidth(bytes, repeats)");
  const double bytes = info[0].As<Napi::Number>().DoubleValue();
  const int repeats = info[1].As<Napi::Number>().Int32Value();
  if (!(bytes >= (1 << 20) && bytes <= double(1ull << 34)) || repeats < 1 || repeats > 100)
    ThrowCoded(env, "ERR_ARGUMENT", "measureBandwidth: bytes in [1 MiB, 16 GiB], repeats in [1, 100]");
  auto* w = new BandwidthWorker(env, uint64_t(bytes), repeats);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

void InitEngine(Napi::Env env, Napi::Object exports) {
  exports.Set("sampleToken", Napi::Function::New(env, SampleToken));
  exports.Set("systemInfo", Napi::Function::New(env, SystemInfo));
  exports.Set("measureBandwidth", Napi::Function::New(env, MeasureBandwidth));
}

}  // namespace dg_bind
