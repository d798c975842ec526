// A FullModel behind an External handle. Its f32 master weights and gradients
// are handed to JavaScript once, as zero-copy ArrayBuffers over the native
// buffers (each keeps the model alive), so AdamW (lib/train/optimizer.ts) updates
// the weights the forward reads and checkpoints read them without copies.
// step/logits run off the event loop; the caller awaits each before touching the
// arrays (lib/train/pretrain.ts), and a mutex serializes overlapping calls.
#include "bindings/pretrain_binding.h"

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bindings/convert.h"
#include "bindings/model_binding.h"
#include "train/full_model.h"

namespace dg_bind {
namespace {

struct Handle {
  dg::FullModel model;
  std::mutex busy;
  Handle(dg::ModelConfig c, bool bf16) : model(std::move(c), bf16) {}
};
using HandlePtr = std::shared_ptr<Handle>;

HandlePtr HandleFrom(Napi::Env env, Napi::Value v) {
  if (!v.IsExternal()) ThrowCoded(env, "ERR_ARGUMENT", "handle must come from fullModelCreate()");
  return *v.As<Napi::External<HandlePtr>>().Data();
}

Napi::Float32Array SharedArray(Napi::Env env, const HandlePtr& h, float* data, int64_t n) {
  auto* keep = new HandlePtr(h);
  Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(
      env, data, size_t(n) * sizeof(float), [](Napi::Env, void*, HandlePtr* k) { delete k; }, keep);
  return Napi::Float32Array::New(env, size_t(n), buf, 0);
}

// fullModelCreate(config, { bf16Compute }) -> { handle, params: [{ name, shape, data, grad }] }
Napi::Value Create(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  dg::ModelConfig cfg = ModelConfigFromObject(ArgObject(info, 0, "config"));
  const bool bf16 = BoolField(ArgObject(info, 1, "options"), "bf16Compute");
  HandlePtr h = Guarded(env, [&] { return std::make_shared<Handle>(std::move(cfg), bf16); });
  Napi::Object out = Napi::Object::New(env);
  out.Set("handle", Napi::External<HandlePtr>::New(env, new HandlePtr(h), [](Napi::Env, HandlePtr* p) { delete p; }));
  Napi::Array list = Napi::Array::New(env);
  uint32_t i = 0;
  for (dg::FullParam& p : h->model.params()) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", p.name);
    Napi::Array shape = Napi::Array::New(env);
    for (uint32_t j = 0; j < p.shape.size(); ++j) shape.Set(j, Napi::Number::New(env, double(p.shape[j])));
    o.Set("shape", shape);
    o.Set("data", SharedArray(env, h, p.data, p.size));
    o.Set("grad", SharedArray(env, h, p.grad, p.size));
    list.Set(i++, o);
  }
  out.Set("params", list);
  return out;
}

std::vector<int32_t> Ids(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    ThrowCoded(env, "ERR_ARGUMENT", std::string(what) + " must be an Int32Array");
  Napi::Int32Array a = v.As<Napi::Int32Array>();
  return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());
}

class StepWorker : public CodedWorker {
 public:
  StepWorker(Napi::Env env, HandlePtr h, std::vector<int32_t> rows, int64_t width, bool train)
      : CodedWorker(env), h_(std::move(h)), rows_(std::move(rows)), width_(width), train_(train) {}

 protected:
  void Compute() override {
    std::lock_guard<std::mutex> lock(h_->busy);
    h_->model.refresh_compute();
    r_ = h_->model.step(rows_.data(), int64_t(rows_.size()) / width_, width_, train_);
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("lossSum", r_.loss_sum);
    o.Set("targets", double(r_.targets));
    return o;
  }

 private:
  HandlePtr h_;
  std::vector<int32_t> rows_;
  int64_t width_;
  bool train_;
  dg::FullStepResult r_;
};

// fullModelStep(handle, rows: Int32Array [B * width], width, train) -> Promise<{ lossSum, targets }>
Napi::Value Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[2].IsNumber() || !info[3].IsBoolean())
    ThrowCoded(env, "ERR_ARGUMENT", "fullModelStep(handle, rows, width, train)");
  HandlePtr h = HandleFrom(env, info[0]);
  std::vector<int32_t> rows = Ids(env, info[1], "rows");
  const double width = info[2].As<Napi::Number>().DoubleValue();
  if (!(width >= 2 && width == double(int64_t(width))) || rows.empty() || rows.size() % size_t(width) != 0)
    ThrowCoded(env, "ERR_ARGUMENT", "rows must hold a whole number (>= 1) of rows of width >= 2");
  auto* w = new StepWorker(env, std::move(h), std::move(rows), int64_t(width), info[3].As<Napi::Boolean>().Value());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

class LogitsWorker : public CodedWorker {
 public:
  LogitsWorker(Napi::Env env, HandlePtr h, std::vector<int32_t> ids) : CodedWorker(env), h_(std::move(h)), ids_(std::move(ids)) {}

 protected:
  void Compute() override {
    std::lock_guard<std::mutex> lock(h_->busy);
    h_->model.refresh_compute();
    out_ = h_->model.logits(ids_.data(), int64_t(ids_.size()));
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Float32Array a = Napi::Float32Array::New(env, out_.size());
    std::copy(out_.begin(), out_.end(), a.Data());
    return a;
  }

 private:
  HandlePtr h_;
  std::vector<int32_t> ids_;
  std::vector<float> out_;
};

// fullModelLogits(handle, ids: Int32Array) -> Promise<Float32Array [T * vocab]>
Napi::Value Logits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2) ThrowCoded(env, "ERR_ARGUMENT", "fullModelLogits(handle, ids)");
  HandlePtr h = HandleFrom(env, info[0]);
  auto* w = new LogitsWorker(env, std::move(h), Ids(env, info[1], "ids"));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

void InitPretrain(Napi::Env env, Napi::Object exports) {
  exports.Set("fullModelCreate", Napi::Function::New(env, Create));
  exports.Set("fullModelStep", Napi::Function::New(env, Step));
  exports.Set("fullModelLogits", Napi::Function::New(env, Logits));
}

}  // namespace dg_bind
