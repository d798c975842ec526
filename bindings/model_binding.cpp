// NativeModel / NativeSession: the engine as JS objects. Heavy work (loading,
// every forward step) runs in AsyncWorkers off the event loop; the JS objects
// hold shared_ptrs so a session keeps its model alive.
#include "bindings/model_binding.h"

#include <cstring>
#include <memory>
#include <vector>

#include "bindings/convert.h"
#include "core/thread_pool.h"
#include "kernels/ops.h"
#include "model/transformer.h"
#include "quant/cache.h"
#include "quant/formats.h"
#include "quant/quantize.h"

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
    r.file = int32_t(IntField(t, "file", 0, INT32_MAX));
    r.offset = uint64_t(IntField(t, "offset", 0, kMaxSafeInteger));
    r.length = uint64_t(IntField(t, "length", 0, kMaxSafeInteger));
    Napi::Value shape = t.Get("shape");
    if (!shape.IsArray()) ThrowCoded(env, "ERR_ARGUMENT", r.name + ": shape must be an array");
    Napi::Array sa = shape.As<Napi::Array>();
    if (sa.Length() > 8) ThrowCoded(env, "ERR_ARGUMENT", r.name + ": shape has more than 8 dimensions");
    for (uint32_t j = 0; j < sa.Length(); ++j)
      r.shape.push_back(ToInt(env, sa.Get(j), r.name + ": shape[" + std::to_string(j) + "]", 0, kMaxSafeInteger));
    // Tensors the model does not use may have any dtype; bound ones are checked at load.
    const std::string dtype = StringField(t, "dtype");
    if (!ParseDType(dtype, &r.dtype)) r.unsupported_dtype = dtype;
    tensors.push_back(std::move(r));
  }
  return tensors;
}

dg::ModelConfig ParseConfig(const Napi::Object& o) {
  dg::ModelConfig c;
  // Bounds far beyond any real model, so products of two of them fit in int64
  // and a hostile config cannot make a size computation wrap.
  constexpr int64_t kDim = int64_t(1) << 20;
  c.hidden = IntField(o, "hiddenSize", 1, kDim);
  c.n_layers = IntField(o, "numLayers", 1, 4096);
  c.n_heads = IntField(o, "numHeads", 1, 4096);
  c.n_kv_heads = IntField(o, "numKvHeads", 1, 4096);
  c.head_dim = IntField(o, "headDim", 1, 4096);
  c.intermediate = IntField(o, "intermediateSize", 1, kDim);
  c.vocab = IntField(o, "vocabSize", 1, INT32_MAX);
  c.rms_eps = float(NumberField(o, "rmsNormEps"));
  Napi::Value inv_freq = o.Get("ropeInvFreq");
  if (!inv_freq.IsArray()) ThrowCoded(o.Env(), "ERR_ARGUMENT", "field ropeInvFreq must be an array of numbers");
  Napi::Array fa = inv_freq.As<Napi::Array>();
  if (fa.Length() > 4096) ThrowCoded(o.Env(), "ERR_ARGUMENT", "field ropeInvFreq has more than 4096 entries");
  for (uint32_t i = 0; i < fa.Length(); ++i)
    c.rope_inv_freq.push_back(float(ToFinite(o.Env(), fa.Get(i), "field ropeInvFreq[" + std::to_string(i) + "]")));
  c.tie_embeddings = BoolField(o, "tieWordEmbeddings");
  c.qkv_bias = BoolField(o, "qkvBias");
  c.o_bias = BoolField(o, "oBias");
  c.mlp_bias = BoolField(o, "mlpBias");
  return c;
}

// Load-time quantization request: the format and an optional JS progress callback.
struct QuantRequest {
  bool enabled = false;
  dg::DType format = dg::DType::Q8_0;
  Napi::ThreadSafeFunction progress;  // called with (done, total) weights; empty if none
  bool has_progress = false;
  std::string cache_path;  // non-empty: load from / write to this quantized-weights cache
};

class LoadWorker : public CodedWorker {
 public:
  LoadWorker(Napi::Env env, dg::ModelConfig cfg, std::vector<std::string> files, std::vector<dg::TensorRef> tensors,
             dg::MappedFile::Mode mode, Napi::Function ctor, QuantRequest quant, dg::DType kv_dtype,
             bool bf16_activations)
      : CodedWorker(env), cfg_(std::move(cfg)), files_(std::move(files)), tensors_(std::move(tensors)), mode_(mode),
        ctor_(Napi::Persistent(ctor)), quant_(std::move(quant)), kv_dtype_(kv_dtype),
        bf16_activations_(bf16_activations) {}
  ~LoadWorker() override {
    if (quant_.has_progress) quant_.progress.Release();
  }

 protected:
  void Compute() override {
    dg::ModelWeights w = dg::load_weights(cfg_, files_, tensors_, mode_);
    if (quant_.enabled) {
      auto report = [this](uint64_t done, uint64_t total) {
        if (!quant_.has_progress) return;
        auto* p = new std::pair<double, double>(double(done), double(total));
        if (quant_.progress.NonBlockingCall(p, [](Napi::Env env, Napi::Function fn, std::pair<double, double>* v) {
              Napi::Object o = Napi::Object::New(env);
              o.Set("done", v->first);
              o.Set("total", v->second);
              delete v;
              fn.Call({o});
            }) != napi_ok)
          delete p;
      };
      uint64_t fingerprint = 0;
      if (!quant_.cache_path.empty()) {
        fingerprint = dg::quant_fingerprint(cfg_, files_, quant_.format);
        if (dg::load_quant_cache(quant_.cache_path, w, quant_.format, fingerprint, mode_)) {
          cache_state_ = "loaded";
          report(1, 1);  // nothing left to quantize
        }
      }
      if (cache_state_.empty()) {
        dg::quantize_weights(w, quant_.format, dg::ThreadPool::global(), report);
        if (!quant_.cache_path.empty()) {
          dg::write_quant_cache(quant_.cache_path, w, quant_.format, fingerprint);
          cache_state_ = "written";
        }
      }
    }
    model_ = std::make_shared<Transformer>(cfg_, std::move(w), kv_dtype_, bf16_activations_);
  }
  Napi::Value Result(Napi::Env env) override;

 private:
  dg::ModelConfig cfg_;
  std::vector<std::string> files_;
  std::vector<dg::TensorRef> tensors_;
  dg::MappedFile::Mode mode_;
  Napi::FunctionReference ctor_;
  QuantRequest quant_;
  dg::DType kv_dtype_;
  bool bf16_activations_;
  std::string cache_state_;  // "", "loaded" or "written"
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
                        InstanceMethod<&NativeSession::CopyFrom>("copyFrom"),
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
    const int64_t n = ToInt(info.Env(), info.Length() > 0 ? info[0] : info.Env().Undefined(), "truncate(n): n", 0,
                            kMaxSafeInteger);
    const auto& s = get(info.Env());
    Guarded(info.Env(), [&] { s->truncate(n); });
  }
  // copyFrom(other): this session becomes a copy of other's KV cache.
  void CopyFrom(const Napi::CallbackInfo& info) {
    const auto& s = get(info.Env());
    std::shared_ptr<Session> other = UnwrapSession(info.Env(), info.Length() > 0 ? info[0] : info.Env().Undefined(), "copyFrom: other");
    Guarded(info.Env(), [&] { s->copy_from(*other); });
  }
  // Frees the KV cache now rather than at garbage collection; a step still in
  // flight keeps its own reference and finishes normally.
  void Dispose(const Napi::CallbackInfo&) { session.reset(); }
};
Napi::FunctionReference NativeSession::ctor;

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
                        InstanceMethod<&NativeModel::LoadAdapter>("loadAdapter"),
                        InstanceMethod<&NativeModel::UnloadAdapter>("unloadAdapter"),
                        InstanceMethod<&NativeModel::Info>("info"),
                        InstanceMethod<&NativeModel::Dispose>("dispose")});
  }
  explicit NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info) {}
  std::shared_ptr<Transformer> model;
  std::string quant_cache;  // how a quantized-weights cache was used: "", "loaded", "written"

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

  // loadAdapter({rank, scale, targets: string[], layers: number[]}, files, tensors) -> Promise<void>
  Napi::Value LoadAdapter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = ArgObject(info, 0, "adapter spec");
    if (info.Length() < 3 || !info[1].IsArray() || !info[2].IsArray())
      ThrowCoded(env, "ERR_ARGUMENT", "loadAdapter(spec, files[], tensors[])");
    dg::LoraSpec spec;
    spec.rank = IntField(o, "rank", 1, 1 << 16);
    spec.scale = float(NumberField(o, "scale"));
    Napi::Value targets = o.Get("targets"), layers = o.Get("layers");
    if (!targets.IsArray() || !layers.IsArray()) ThrowCoded(env, "ERR_ARGUMENT", "adapter spec needs targets[] and layers[]");
    for (const std::string& name : ParseStrings(env, targets.As<Napi::Array>(), "targets")) {
      dg::Projection p;
      if (!dg::parse_projection(name, &p)) ThrowCoded(env, "ERR_ADAPTER", "unknown LoRA target module " + name);
      spec.targets.push_back(p);
    }
    Napi::Array la = layers.As<Napi::Array>();
    const int64_t n_layers = get(env)->config().n_layers;
    if (la.Length() > uint32_t(n_layers)) ThrowCoded(env, "ERR_ADAPTER", "adapter spec names more layers than the model has");
    for (uint32_t i = 0; i < la.Length(); ++i)
      spec.layers.push_back(ToInt(env, la.Get(i), "adapter layers[" + std::to_string(i) + "]", 0, n_layers - 1));
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
    // Bytes of every linear weight (and the LM head) as the kernels read them,
    // and the dtype of each distinct kind, e.g. "Q8_0" or "Q4_K+Q4_0".
    uint64_t linear_bytes = 0;
    std::string dtypes;
    auto add = [&](const dg::Matrix& m) {
      linear_bytes += uint64_t(m.rows * dg::dtype_row_bytes(m.dtype, m.cols));
      const std::string n = dg::dtype_name(m.dtype);
      if (("+" + dtypes + "+").find("+" + n + "+") == std::string::npos) dtypes += (dtypes.empty() ? "" : "+") + n;
    };
    for (const auto& L : w.layers)
      for (const dg::Linear* l : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) add(l->w);
    add(w.lm_head);
    o.Set("linearBytes", double(linear_bytes));
    o.Set("quantCache", quant_cache);
    o.Set("linearDtype", dtypes);
    o.Set("activations", get(info.Env())->bf16_activations() ? "bfloat16" : "float32");
    o.Set("kvCacheDtype", dg::dtype_name(get(info.Env())->kv_dtype()));
    return o;
  }
};
Napi::FunctionReference NativeModel::ctor;

Napi::Value LoadWorker::Result(Napi::Env) {
  Napi::Object obj = ctor_.New({});
  NativeModel::Unwrap(obj)->model = model_;
  NativeModel::Unwrap(obj)->quant_cache = cache_state_;
  return obj;
}

// loadModel(config, files: string[], tensors: {name, file, dtype, shape, offset, length}[],
//           { mmap: boolean, activations: "auto" | "float32" | "bfloat16", quantize?, onProgress?, cacheFile?,
//             kvCache?: "F32" | "BF16" })
//   -> Promise<NativeModel>
Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  dg::ModelConfig cfg = ParseConfig(ArgObject(info, 0, "config"));
  if (info.Length() < 3 || !info[1].IsArray() || !info[2].IsArray())
    ThrowCoded(env, "ERR_ARGUMENT", "loadModel(config, files[], tensors[])");
  std::vector<std::string> files = ParseStrings(env, info[1].As<Napi::Array>(), "files");
  std::vector<dg::TensorRef> tensors = ParseTensors(env, info[2].As<Napi::Array>());
  Napi::Object opts = ArgObject(info, 3, "load options");
  const bool mmap = BoolField(opts, "mmap");
  QuantRequest quant;
  Napi::Value q = opts.Get("quantize");
  if (!q.IsUndefined() && !q.IsNull()) {
    if (!q.IsString() || !dg::parse_quant_format(q.As<Napi::String>().Utf8Value().c_str(), &quant.format))
      ThrowCoded(env, "ERR_QUANT_FORMAT", "quantize must be \"q8_0\", \"q4_0\" or \"q4_k\"");
    quant.enabled = true;
    Napi::Value cb = opts.Get("onProgress");
    if (cb.IsFunction()) {
      quant.progress = Napi::ThreadSafeFunction::New(env, cb.As<Napi::Function>(), "deepguard-quantize", 0, 1);
      quant.has_progress = true;
    } else if (!cb.IsUndefined()) {
      ThrowCoded(env, "ERR_ARGUMENT", "onProgress must be a function");
    }
    Napi::Value cache = opts.Get("cacheFile");
    if (cache.IsString()) quant.cache_path = cache.As<Napi::String>().Utf8Value();
    else if (!cache.IsUndefined()) ThrowCoded(env, "ERR_ARGUMENT", "cacheFile must be a string");
  }
  // activations: "float32", "bfloat16", or "auto" (bfloat16 where AMX runs it).
  Napi::Value av = opts.Get("activations");
  if (!av.IsUndefined() && !av.IsString()) ThrowCoded(env, "ERR_ARGUMENT", "activations must be a string");
  const std::string acts = av.IsUndefined() ? "float32" : av.As<Napi::String>().Utf8Value();
  if (acts != "auto" && acts != "float32" && acts != "bfloat16")
    ThrowCoded(env, "ERR_ARGUMENT", "activations must be \"auto\", \"float32\" or \"bfloat16\"");
  const bool bf16_activations = acts == "bfloat16" || (acts == "auto" && dg::amx_active());
  // kvCache: "F32" (default) or "BF16", the dtype of every session's KV cache.
  dg::DType kv_dtype = dg::DType::F32;
  Napi::Value kv = opts.Get("kvCache");
  if (!kv.IsUndefined()) {
    const std::string name = kv.IsString() ? kv.As<Napi::String>().Utf8Value() : "";
    if (name == "BF16") kv_dtype = dg::DType::BF16;
    else if (name != "F32") ThrowCoded(env, "ERR_ARGUMENT", "kvCache must be \"F32\" or \"BF16\"");
  }
  auto* w = new LoadWorker(env, std::move(cfg), std::move(files), std::move(tensors),
                           mmap ? dg::MappedFile::Mode::Map : dg::MappedFile::Mode::Read, NativeModel::ctor.Value(),
                           std::move(quant), kv_dtype, bf16_activations);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

std::shared_ptr<dg::Transformer> UnwrapModel(Napi::Env env, const Napi::Value& v, const char* what) {
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(NativeModel::ctor.Value()))
    ThrowCoded(env, "ERR_ARGUMENT", std::string(what) + " is not a NativeModel");
  const std::shared_ptr<Transformer>& m = NativeModel::Unwrap(v.As<Napi::Object>())->model;
  if (!m) ThrowCoded(env, "ERR_DISPOSED", "this model has been disposed");
  return m;
}

std::shared_ptr<dg::Session> UnwrapSession(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(NativeSession::ctor.Value()))
    ThrowCoded(env, "ERR_ARGUMENT", what + " is not a NativeSession");
  return NativeSession::Unwrap(v.As<Napi::Object>())->get(env);
}

void InitModel(Napi::Env env, Napi::Object exports) {
  NativeModel::ctor = Napi::Persistent(NativeModel::Define(env));
  NativeSession::ctor = Napi::Persistent(NativeSession::Define(env));
  exports.Set("loadModel", Napi::Function::New(env, LoadModel));
}

dg::ModelConfig ModelConfigFromObject(const Napi::Object& o) { return ParseConfig(o); }

}  // namespace dg_bind
