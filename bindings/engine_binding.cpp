// Engine-level functions that need no model: sampling, CPU and memory facts.
#include "bindings/engine_binding.h"

#include <cmath>
#include <string>
#include <vector>

#include "bindings/convert.h"
#include "core/bandwidth.h"
#include "core/cpu_features.h"
#include "core/thread_pool.h"
#include "kernels/ops.h"
#include "serve/scheduler.h"

namespace dg_bind {
namespace {

// sampleToken(logits: Float32Array, { temperature?, topK?, topP? }, u, bias?: Float32Array) -> token id.
// Absent fields take the defaults of SamplingParams; out-of-range values are
// rejected here rather than quietly clamped by the kernel. The bias (same
// length as logits) is added to a copy of the logits, natively.
Napi::Value SampleToken(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[1].IsObject())
    ThrowCoded(env, "ERR_ARGUMENT", "sampleToken(logits: Float32Array, params, u: number, bias?: Float32Array)");
  Napi::Float32Array logits = ToFloat32Array(env, info[0], "sampleToken: logits");
  if (logits.ElementLength() == 0 || logits.ElementLength() > size_t(INT32_MAX))
    ThrowCoded(env, "ERR_ARGUMENT", "sampleToken: logits must have 1 to 2^31-1 entries");
  Napi::Object o = info[1].As<Napi::Object>();
  auto field = [&](const char* key, double fallback) {
    Napi::Value v = o.Get(key);
    if (v.IsUndefined()) return fallback;
    return ToFinite(env, v, std::string("sampleToken: params.") + key);
  };
  const double temperature = field("temperature", 0.0), top_k = field("topK", 0.0), top_p = field("topP", 1.0);
  if (!(temperature >= 0)) ThrowCoded(env, "ERR_ARGUMENT", "sampleToken: params.temperature must be a finite number >= 0");
  if (!(top_k >= 0 && top_k <= 2147483647.0) || top_k != std::floor(top_k))
    ThrowCoded(env, "ERR_ARGUMENT", "sampleToken: params.topK must be an integer >= 0 (0: off)");
  if (!(top_p > 0 && top_p <= 1)) ThrowCoded(env, "ERR_ARGUMENT", "sampleToken: params.topP must be in (0, 1] (1: off)");
  if (!info[2].IsNumber()) ThrowCoded(env, "ERR_ARGUMENT", "sampleToken: u must be in [0, 1)");
  const double u = info[2].As<Napi::Number>().DoubleValue();
  if (!(u >= 0 && u < 1)) ThrowCoded(env, "ERR_ARGUMENT", "sampleToken: u must be in [0, 1)");
  dg::SamplingParams p;
  p.temperature = float(temperature);
  p.top_k = int32_t(top_k);
  p.top_p = float(top_p);
  const int64_t n = int64_t(logits.ElementLength());
  if (info.Length() > 3 && !info[3].IsUndefined() && !info[3].IsNull()) {
    Napi::Float32Array bias = ToFloat32Array(env, info[3], "sampleToken: bias");
    if (int64_t(bias.ElementLength()) != n)
      ThrowCoded(env, "ERR_ARGUMENT", "sampleToken: bias must have as many entries as logits (" + std::to_string(n) + ")");
    std::vector<float> biased(logits.Data(), logits.Data() + n);
    return Guarded(env, [&] { return Napi::Number::New(env, dg::sample_biased(biased.data(), n, bias.Data(), p, u)); });
  }
  return Guarded(env, [&] { return Napi::Number::New(env, dg::sample_token(logits.Data(), n, p, u)); });
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
  const int64_t bytes = ToInt(env, info[0], "measureBandwidth: bytes", int64_t(1) << 20, int64_t(1) << 34);
  const int repeats = int(ToInt(env, info[1], "measureBandwidth: repeats", 1, 100));
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
