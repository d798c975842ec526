// NativeModel / NativeSession: the engine as JS objects. Heavy work (loading,
// every forward step) runs in AsyncWorkers off the event loop; the JS objects
// hold shared_ptrs so a session keeps its model alive.
#include "bindings/model_binding.h"

#include <cstring>
#include <memory>
#include <vector>

#include "bindings/convert.h"
#include "model/transformer.h"

namespace dg_bind {
namespace {

using dg::Session;
using dg::Transformer;

bool ParseDType(const std::string& s, dg::DType* out) {
  if (s == "F32") *out = dg::DType::F32;
  else if (s == "F16") *out = dg::DType::F16;
  else if (s == "BF16") *out = dg::DType::BF16;
  else return false;
  return true;
}

// files: string[] -> paths.
std::vector<std::string> ParseStrings(Napi::Env env, const Napi::Array& a, const char* what) {
  std::vector<std::string> out;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    if (!a.Get(i).IsString()) ThrowCoded(env, "ERR_ARGUMENT", std::string(what) + " must be strings");
    out.push_back(a.Get(i).As<Napi::String>().Utf8Value());
  }
  return out;
}

// tensors: {name, file, dtype, shape, offset, length}[] as lib/checkpoint.ts builds them.
std::vector<dg::TensorRef> ParseTensors(Napi::Env env, const Napi::Array& ta) {
  std::vector<dg::TensorRef> tensors;
  for (uint32_t i = 0; i < ta.Length(); ++i) {
    if (!ta.Get(i).IsObject()) ThrowCoded(env, "ERR_ARGUMENT", "tensors must be objects");
    Napi::Object t = ta.Get(i).As<Napi::Object>();
    dg::TensorRef r;
    r.name = StringField(t, "name");
    r.file = int32_t(IntField(t, "file"));
    r.offset = uint64_t(IntField(t, "offset"));
    r.length = uint64_t(IntField(t, "length"));
    Napi::Value shape = t.Get("shape");
    if (!shape.IsArray()) ThrowCoded(env, "ERR_ARGUMENT", r.name + ": shape must be an array");
    Napi::Array sa = shape.As<Napi::Array>();
    for (uint32_t j = 0; j < sa.Length(); ++j) r.shape.push_back(sa.Get(j).As<Napi::Number>().Int64Value());
    // Tensors the model does not use may have any dtype; bound ones are checked at load.
    const std::string dtype = StringField(t, "dtype");
    if (!ParseDType(dtype, &r.dtype)) r.unsupported_dtype = dtype;
    tensors.push_back(std::move(r));
  }
  return tensors;
}

dg::ModelConfig ParseConfig(const Napi::Object& o) {
  dg::ModelConfig c;
  c.hidden = IntField(o, "hiddenSize");
  c.n_layers = IntField(o, "numLayers");
  c.n_heads = IntField(o, "numHeads");
  c.n_kv_heads = IntField(o, "numKvHeads");
  c.head_dim = IntField(o, "headDim");
  c.intermediate = IntField(o, "intermediateSize");
  c.vocab = IntField(o, "vocabSize");
  c.rms_eps = float(NumberField(o, "rmsNormEps"));
  Napi::Value inv_freq = o.Get("ropeInvFreq");
  if (!inv_freq.IsArray()) ThrowCoded(o.Env(), "ERR_ARGUMENT", "field ropeInvFreq must be an array of numbers");
  Napi::Array fa = inv_freq.As<Napi::Array>();
  for (uint32_t i = 0; i < fa.Length(); ++i) {
    if (!fa.Get(i).IsNumber()) ThrowCoded(o.Env(), "ERR_ARGUMENT", "field ropeInvFreq must be an array of numbers");
    c.rope_inv_freq.push_back(float(fa.Get(i).As<Napi::Number>().DoubleValue()));
  }
  c.tie_embeddings = BoolField(o, "tieWordEmbeddings");
  c.qkv_bias = BoolField(o, "qkvBias");
  c.o_bias = BoolField(o, "oBias");
  c.mlp_bias = BoolField(o, "mlpBias");
  return c;
}

class LoadWorker : public CodedWorker {
 public:
  LoadWorker(Napi::Env env, dg::ModelConfig cfg, std::vector<std::string> files, std::vector<dg::TensorRef> tensors,
             dg::MappedFile::Mode mode, Napi::Function ctor)
      : CodedWorker(env), cfg_(std::move(cfg)), files_(std::move(files)), tensors_(std::move(tensors)), mode_(mode),
        ctor_(Napi::Persistent(ctor)) {}

 protected:
  void Compute() override {
    dg::ModelWeights w = dg::load_weights(cfg_, files_, tensors_, mode_);
    model_ = std::make_shared<Transformer>(cfg_, std::move(w));
  }
  Napi::Value Result(Napi::Env env) override;

 private:
  dg::ModelConfig cfg_;
  std::vector<std::string> files_;
  std::vector<dg::TensorRef> tensors_;
  dg::MappedFile::Mode mode_;
  Napi::FunctionReference ctor_;
  std::shared_ptr<Transformer> model_;
  friend class NativeModel;
};

class NativeSession : public Napi::ObjectWrap<NativeSession> {
 public:
  static Napi::FunctionReference ctor;
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeSession",
                       {InstanceAccessor<&NativeSession::Length>("length"),
                        InstanceAccessor<&NativeSession::CacheBytes>("cacheBytes"),
                        InstanceMethod<&NativeSession::Truncate>("truncate"),
                        InstanceMethod<&NativeSession::Dispose>("dispose")});
  }
  explicit NativeSession(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeSession>(info) {}

  // The live session; throws ERR_DISPOSED after dispose().
  const std::shared_ptr<Session>& get(Napi::Env env) const {
    if (!session) ThrowCoded(env, "ERR_DISPOSED", "this session has been disposed");
    return session;
  }

  std::shared_ptr<Session> session;

 private:
  Napi::Value Length(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), session ? double(session->length()) : 0.0);
  }
  Napi::Value CacheBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), session ? double(session->cache_bytes()) : 0.0);
  }
  void Truncate(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsNumber()) ThrowCoded(info.Env(), "ERR_ARGUMENT", "truncate(n) needs a number");
    const auto& s = get(info.Env());
    Guarded(info.Env(), [&] { s->truncate(info[0].As<Napi::Number>().Int64Value()); });
  }
  // Frees the KV cache now rather than at garbage collection; a step still in
  // flight keeps its own reference and finishes normally.
  void Dispose(const Napi::CallbackInfo&) { session.reset(); }
};
Napi::FunctionReference NativeSession::ctor;

class StepWorker : public CodedWorker {
 public:
  StepWorker(Napi::Env env, std::shared_ptr<Transformer> model) : CodedWorker(env), model_(std::move(model)) {}

  std::vector<std::shared_ptr<Session>> sessions;
  std::vector<std::vector<int32_t>> tokens;
  dg::StepOptions opts;

 protected:
  void Compute() override {
    std::vector<dg::StepSegment> segs;
    for (size_t i = 0; i < sessions.size(); ++i)
      segs.push_back({sessions[i].get(), tokens[i].data(), int64_t(tokens[i].size())});
    out_ = model_->step(segs, opts);
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Array logits = Napi::Array::New(env, out_.size()), hidden = Napi::Array::New(env, out_.size());
    for (size_t i = 0; i < out_.size(); ++i) {
      logits.Set(uint32_t(i), ToFloat32Array(env, out_[i].logits));
      hidden.Set(uint32_t(i), ToFloat32Array(env, out_[i].hidden));
    }
    Napi::Object r = Napi::Object::New(env);
    r.Set("logits", logits);
    r.Set("hidden", hidden);
    return r;
  }

 private:
  static Napi::Float32Array ToFloat32Array(Napi::Env env, const std::vector<float>& v) {
    Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
    if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(float));
    return a;
  }
  std::shared_ptr<Transformer> model_;
  std::vector<dg::SegmentOutput> out_;
};

class AdapterWorker : public CodedWorker {
 public:
  AdapterWorker(Napi::Env env, std::shared_ptr<Transformer> model, dg::LoraSpec spec, std::vector<std::string> files,
                std::vector<dg::TensorRef> tensors)
      : CodedWorker(env), model_(std::move(model)), spec_(std::move(spec)), files_(std::move(files)),
        tensors_(std::move(tensors)) {}

 protected:
  void Compute() override {
    model_->set_adapter(std::make_shared<const dg::LoraAdapter>(dg::load_lora(model_->config(), spec_, files_, tensors_)));
  }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  std::shared_ptr<Transformer> model_;
  dg::LoraSpec spec_;
  std::vector<std::string> files_;
  std::vector<dg::TensorRef> tensors_;
};

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  static Napi::FunctionReference ctor;
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeModel",
                       {InstanceMethod<&NativeModel::CreateSession>("createSession"),
                        InstanceMethod<&NativeModel::Step>("step"),
                        InstanceMethod<&NativeModel::LoadAdapter>("loadAdapter"),
                        InstanceMethod<&NativeModel::UnloadAdapter>("unloadAdapter"),
                        InstanceMethod<&NativeModel::Info>("info"),
                        InstanceMethod<&NativeModel::Dispose>("dispose")});
  }
  explicit NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info) {}
  std::shared_ptr<Transformer> model;

 private:
  // The live model; throws ERR_DISPOSED after dispose().
  const std::shared_ptr<Transformer>& get(Napi::Env env) const {
    if (!model) ThrowCoded(env, "ERR_DISPOSED", "this model has been disposed");
    return model;
  }

  // Drops this handle's reference: the weights are freed once the steps in
  // flight and the sessions created from it are gone too.
  void Dispose(const Napi::CallbackInfo&) { model.reset(); }

  Napi::Value CreateSession(const Napi::CallbackInfo& info) {
    // The session holds the model alive: a Session only points at its Transformer.
    std::shared_ptr<Transformer> m = get(info.Env());
    Napi::Object obj = NativeSession::ctor.New({});
    NativeSession::Unwrap(obj)->session = std::shared_ptr<Session>(new Session(*m), [m](Session* p) { delete p; });
    return obj;
  }

  // step(sessions: NativeSession[], tokens: Int32Array[], { logits: "none"|"last"|"all", capture: number[] })
  Napi::Value Step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsArray() || !info[1].IsArray() || !info[2].IsObject())
      ThrowCoded(env, "ERR_ARGUMENT", "step(sessions[], tokens[], options) expects two arrays and an object");
    Napi::Array ss = info[0].As<Napi::Array>(), ts = info[1].As<Napi::Array>();
    if (ss.Length() != ts.Length()) ThrowCoded(env, "ERR_ARGUMENT", "step: one token array per session");
    auto* w = new StepWorker(env, get(env));
    std::unique_ptr<StepWorker> guard(w);
    for (uint32_t i = 0; i < ss.Length(); ++i) {
      Napi::Value sv = ss.Get(i), tv = ts.Get(i);
      if (!sv.IsObject() || !sv.As<Napi::Object>().InstanceOf(NativeSession::ctor.Value()))
        ThrowCoded(env, "ERR_ARGUMENT", "step: sessions[" + std::to_string(i) + "] is not a NativeSession");
      if (!tv.IsTypedArray() || tv.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
        ThrowCoded(env, "ERR_ARGUMENT", "step: tokens[" + std::to_string(i) + "] must be an Int32Array");
      Napi::Int32Array arr = tv.As<Napi::Int32Array>();
      w->sessions.push_back(NativeSession::Unwrap(sv.As<Napi::Object>())->get(env));
      w->tokens.emplace_back(arr.Data(), arr.Data() + arr.ElementLength());
    }
    Napi::Object o = info[2].As<Napi::Object>();
    const std::string mode = StringField(o, "logits");
    if (mode == "none") w->opts.logits = dg::LogitsMode::None;
    else if (mode == "last") w->opts.logits = dg::LogitsMode::Last;
    else if (mode == "all") w->opts.logits = dg::LogitsMode::All;
    else ThrowCoded(env, "ERR_ARGUMENT", "step: logits must be \"none\", \"last\" or \"all\"");
    Napi::Value adapter = o.Get("adapter");
    if (!adapter.IsUndefined()) {
      if (!adapter.IsBoolean()) ThrowCoded(env, "ERR_ARGUMENT", "step: adapter must be a boolean");
      w->opts.use_adapter = adapter.As<Napi::Boolean>().Value();
    }
    Napi::Value cap = o.Get("capture");
    if (!cap.IsArray()) ThrowCoded(env, "ERR_ARGUMENT", "step: capture must be an array of layer indices");
    Napi::Array ca = cap.As<Napi::Array>();
    for (uint32_t i = 0; i < ca.Length(); ++i) {
      Napi::Value v = ca.Get(i);
      if (!v.IsNumber()) ThrowCoded(env, "ERR_ARGUMENT", "step: capture entries must be integers");
      w->opts.capture.push_back(v.As<Napi::Number>().Int32Value());
    }
    Napi::Promise p = w->Promise();
    guard.release()->Queue();
    return p;
  }

  // loadAdapter({rank, scale, targets: string[], layers: number[]}, files, tensors) -> Promise<void>
  Napi::Value LoadAdapter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = ArgObject(info, 0, "adapter spec");
    if (info.Length() < 3 || !info[1].IsArray() || !info[2].IsArray())
      ThrowCoded(env, "ERR_ARGUMENT", "loadAdapter(spec, files[], tensors[])");
    dg::LoraSpec spec;
    spec.rank = IntField(o, "rank");
    spec.scale = float(NumberField(o, "scale"));
    Napi::Value targets = o.Get("targets"), layers = o.Get("layers");
    if (!targets.IsArray() || !layers.IsArray()) ThrowCoded(env, "ERR_ARGUMENT", "adapter spec needs targets[] and layers[]");
    for (const std::string& name : ParseStrings(env, targets.As<Napi::Array>(), "targets")) {
      dg::Projection p;
      if (!dg::parse_projection(name, &p)) ThrowCoded(env, "ERR_ADAPTER", "unknown LoRA target module " + name);
      spec.targets.push_back(p);
    }
    Napi::Array la = layers.As<Napi::Array>();
    for (uint32_t i = 0; i < la.Length(); ++i) spec.layers.push_back(la.Get(i).As<Napi::Number>().Int64Value());
    auto* w = new AdapterWorker(env, get(env), std::move(spec), ParseStrings(env, info[1].As<Napi::Array>(), "files"),
                                ParseTensors(env, info[2].As<Napi::Array>()));
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  }

  void UnloadAdapter(const Napi::CallbackInfo& info) { get(info.Env())->set_adapter(nullptr); }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Object o = Napi::Object::New(info.Env());
    const dg::ModelWeights& w = get(info.Env())->weights();
    uint64_t mapped = 0;
    for (const auto& f : w.storage.files) mapped += f->size();
    o.Set("parameterCount", double(w.storage.elements));
    o.Set("mappedBytes", double(mapped));
    return o;
  }
};
Napi::FunctionReference NativeModel::ctor;

Napi::Value LoadWorker::Result(Napi::Env) {
  Napi::Object obj = ctor_.New({});
  NativeModel::Unwrap(obj)->model = model_;
  return obj;
}

// loadModel(config, files: string[], tensors: {name, file, dtype, shape, offset, length}[], { mmap: boolean })
//   -> Promise<NativeModel>
Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  dg::ModelConfig cfg = ParseConfig(ArgObject(info, 0, "config"));
  if (info.Length() < 3 || !info[1].IsArray() || !info[2].IsArray())
    ThrowCoded(env, "ERR_ARGUMENT", "loadModel(config, files[], tensors[])");
  std::vector<std::string> files = ParseStrings(env, info[1].As<Napi::Array>(), "files");
  std::vector<dg::TensorRef> tensors = ParseTensors(env, info[2].As<Napi::Array>());
  const bool mmap = BoolField(ArgObject(info, 3, "load options"), "mmap");
  auto* w = new LoadWorker(env, std::move(cfg), std::move(files), std::move(tensors),
                           mmap ? dg::MappedFile::Mode::Map : dg::MappedFile::Mode::Read, NativeModel::ctor.Value());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

std::shared_ptr<dg::Transformer> ModelFromValue(Napi::Env env, Napi::Value v) {
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(NativeModel::ctor.Value()))
    ThrowCoded(env, "ERR_ARGUMENT", "expected a NativeModel");
  std::shared_ptr<dg::Transformer> m = NativeModel::Unwrap(v.As<Napi::Object>())->model;
  if (!m) ThrowCoded(env, "ERR_DISPOSED", "this model has been disposed");
  return m;
}

void InitModel(Napi::Env env, Napi::Object exports) {
  NativeModel::ctor = Napi::Persistent(NativeModel::Define(env));
  NativeSession::ctor = Napi::Persistent(NativeSession::Define(env));
  exports.Set("loadModel", Napi::Function::New(env, LoadModel));
}

dg::ModelConfig ModelConfigFromObject(const Napi::Object& o) { return ParseConfig(o); }

}  // namespace dg_bind
