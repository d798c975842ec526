// Bindings for native/guard: one async call scores (or trains on) every token of
// a batch of sequences. JS owns the parameters and gradients (Float32Arrays, held
// by reference while a worker runs); the activations a backward needs stay in a
// native tape that JS holds as an opaque handle.
#include "bindings/guard_binding.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bindings/convert.h"
#include "core/thread_pool.h"
#include "guard/guard.h"
#include "kernels/ops.h"

namespace dg_bind {
namespace {

namespace gd = dg::guard;
using TapePtr = std::shared_ptr<gd::Tape>;

[[noreturn]] void Bad(Napi::Env env, const std::string& msg) { ThrowCoded(env, "ERR_ARGUMENT", msg); }

bool IsType(Napi::Value v, napi_typedarray_type t) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == t;
}

// Keeps typed arrays alive while a worker reads and writes their memory.
struct Held {
  std::vector<Napi::Reference<Napi::TypedArray>> refs;
  template <typename A>
  auto* hold(A a) {
    refs.push_back(Napi::Persistent(a.template As<Napi::TypedArray>()));
    return a.Data();
  }
};

int64_t DimField(const Napi::Object& o, const char* key, int64_t lo, int64_t hi) {
  const int64_t v = IntField(o, key);
  if (v < lo || v > hi)
    Bad(o.Env(), std::string("field ") + key + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v;
}

// spec: { hiddenSize, layers, vocabSize, aggregation, dropout }
gd::Dims ParseDims(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) Bad(env, "spec must be an object");
  Napi::Object o = v.As<Napi::Object>();
  gd::Dims dims;
  dims.d = DimField(o, "hiddenSize", 1, 1 << 16);
  dims.m = DimField(o, "layers", 1, 1024);
  dims.vocab = DimField(o, "vocabSize", 1, 1 << 24);
  const std::string agg = StringField(o, "aggregation");
  if (agg == "attention") dims.aggregation = gd::Aggregation::Attention;
  else if (agg == "mean") dims.aggregation = gd::Aggregation::Mean;
  else if (agg == "last") dims.aggregation = gd::Aggregation::Last;
  else if (agg == "weighted") dims.aggregation = gd::Aggregation::Weighted;
  else ThrowCoded(env, "ERR_ARGUMENT", "unknown aggregation \"" + agg + "\" (attention, mean, last or weighted)");
  const double p = NumberField(o, "dropout");
  if (!(p >= 0 && p < 1)) Bad(env, "field dropout must be in [0, 1)");
  dims.dropout = float(p);
  return dims;
}

// Every tensor the dims use, by its guard.safetensors name, with its exact length.
// `what` is "params" or "grads"; grads may omit tensors (not accumulated).
template <typename Ptr>
void ParseTensors(Napi::Env env, Napi::Value v, const gd::Dims& dims, const char* what, bool optional, Held& held,
                  Ptr (&out)[gd::kTensorCount]) {
  if (!v.IsObject()) Bad(env, std::string(what) + " must be an object of Float32Arrays");
  Napi::Object o = v.As<Napi::Object>();
  for (int i = 0; i < gd::kTensorCount; ++i) {
    out[i] = nullptr;
    const int64_t n = gd::tensor_size(i, dims);
    if (n == 0) continue;
    const char* name = gd::tensor_name(i);
    Napi::Value a = o.Get(name);
    if (optional && (a.IsUndefined() || a.IsNull())) continue;
    if (!IsType(a, napi_float32_array)) Bad(env, std::string(what) + "[\"" + name + "\"] must be a Float32Array");
    Napi::Float32Array f = a.As<Napi::Float32Array>();
    if (int64_t(f.ElementLength()) != n)
      Bad(env, std::string(what) + "[\"" + name + "\"] has " + std::to_string(f.ElementLength()) + " values, expected " +
                   std::to_string(n));
    out[i] = held.hold(f);
  }
}

// items: [{ ids: Int32Array, hidden: Float32Array[m] (each [T * d]) }]; the
// pointers are read by the worker (copied into the tape off the event loop).
struct ItemRefs {
  std::vector<const int32_t*> ids;
  std::vector<std::vector<const float*>> hidden;
  std::vector<int64_t> lengths;
  int64_t total = 0;
};

ItemRefs ParseItems(Napi::Env env, Napi::Value v, const gd::Dims& dims, Held& held) {
  if (!v.IsArray()) Bad(env, "batch must be an array of { ids, hidden }");
  Napi::Array list = v.As<Napi::Array>();
  ItemRefs r;
  for (uint32_t i = 0; i < list.Length(); ++i) {
    const std::string at = "batch[" + std::to_string(i) + "]";
    if (!list.Get(i).IsObject()) Bad(env, at + " must be an object");
    Napi::Object o = list.Get(i).As<Napi::Object>();
    Napi::Value ids = o.Get("ids");
    if (!IsType(ids, napi_int32_array)) Bad(env, at + ".ids must be an Int32Array");
    Napi::Int32Array ia = ids.As<Napi::Int32Array>();
    const int64_t T = int64_t(ia.ElementLength());
    Napi::Value hv = o.Get("hidden");
    if (!hv.IsArray() || hv.As<Napi::Array>().Length() != uint32_t(dims.m))
      Bad(env, at + ".hidden must be an array of " + std::to_string(dims.m) + " Float32Arrays (one per guard layer)");
    Napi::Array ha = hv.As<Napi::Array>();
    std::vector<const float*> rows;
    for (uint32_t l = 0; l < ha.Length(); ++l) {
      Napi::Value h = ha.Get(l);
      if (!IsType(h, napi_float32_array)) Bad(env, at + ".hidden[" + std::to_string(l) + "] must be a Float32Array");
      Napi::Float32Array f = h.As<Napi::Float32Array>();
      if (int64_t(f.ElementLength()) != T * dims.d)
        Bad(env, at + ".hidden[" + std::to_string(l) + "] has " + std::to_string(f.ElementLength()) +
                     " values, expected tokens * hiddenSize = " + std::to_string(T * dims.d));
      rows.push_back(held.hold(f));
    }
    r.ids.push_back(held.hold(ia));
    r.hidden.push_back(std::move(rows));
    r.lengths.push_back(T);
    r.total += T;
  }
  if (r.total > (int64_t(1) << 24)) Bad(env, "batch holds more than 2^24 tokens");
  return r;
}

// Concatenates the items into the tape's ids and layer-major h [m][N][d].
void FillTape(gd::Tape& tp, const ItemRefs& r, const gd::Dims& dims) {
  const int64_t N = r.total, d = dims.d;
  tp.N = N;
  tp.ids.resize(size_t(N));
  tp.h.resize(size_t(dims.m * N * d));
  int64_t t0 = 0;
  for (size_t i = 0; i < r.lengths.size(); ++i) {
    const int64_t T = r.lengths[i];
    if (T > 0) std::memcpy(tp.ids.data() + t0, r.ids[i], size_t(T) * 4);
    for (int64_t l = 0; l < dims.m; ++l)
      if (T > 0) std::memcpy(tp.h.data() + (l * N + t0) * d, r.hidden[i][size_t(l)], size_t(T * d) * 4);
    t0 += T;
  }
}

class ForwardWorker : public CodedWorker {
 public:
  ForwardWorker(Napi::Env env, Held held, gd::Dims dims, gd::Params params, ItemRefs items, std::vector<float*> outs,
                Napi::Array out_list, bool train, uint64_t seed, bool keep, const gd::FusedAttention* fused)
      : CodedWorker(env), held_(std::move(held)), dims_(dims), params_(params), items_(std::move(items)),
        outs_(std::move(outs)), out_list_(Napi::Persistent(out_list)), train_(train), seed_(seed), keep_(keep),
        tape_(std::make_shared<gd::Tape>()), has_fused_(fused != nullptr) {
    if (fused) fused_ = *fused;
  }

 protected:
  void Compute() override {
    FillTape(*tape_, items_, dims_);
    if (has_fused_) gd::guard_forward_fused(*tape_, dims_, params_, fused_, dg::ThreadPool::global());
    else gd::guard_forward(*tape_, dims_, params_, train_, seed_, dg::ThreadPool::global());
    int64_t t0 = 0;
    for (size_t i = 0; i < outs_.size(); ++i) {
      const int64_t T = items_.lengths[i];
      if (T > 0) std::memcpy(outs_[i], tape_->score.data() + t0, size_t(T) * 4);
      t0 += T;
    }
    if (!keep_) tape_.reset();
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object r = Napi::Object::New(env);
    r.Set("tokens", out_list_.Value());
    if (keep_) {
      auto* box = new TapePtr(tape_);
      r.Set("tape", Napi::External<TapePtr>::New(env, box, [](Napi::Env, TapePtr* p) { delete p; }));
    }
    return r;
  }

 private:
  Held held_;
  gd::Dims dims_;
  gd::Params params_;
  ItemRefs items_;
  std::vector<float*> outs_;
  Napi::Reference<Napi::Array> out_list_;
  bool train_;
  uint64_t seed_;
  bool keep_;
  TapePtr tape_;
  bool has_fused_;
  gd::FusedAttention fused_{};
};

const char* const kFusedNames[4] = {"fused.query_key", "fused.query_key_bias", "fused.value_fc1", "fused.value_fc1_bias"};
int64_t FusedSize(int i, const gd::Dims& dims) {
  return i == 0 ? dims.d * dims.d : i == 1 ? dims.d : i == 2 ? gd::kHidden1 * dims.d : gd::kHidden1;
}

// guardForward(spec, params, batch, { train, seed, keepTape }) ->
//   Promise<{ tokens: Float32Array[], tape?: handle }>
Napi::Value GuardForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4) Bad(env, "guardForward(spec, params, batch, options)");
  const gd::Dims dims = ParseDims(env, info[0]);
  Held held;
  gd::Params params;
  ParseTensors(env, info[1], dims, "params", false, held, params.t);
  ItemRefs items = ParseItems(env, info[2], dims, held);
  Napi::Object opt = ArgObject(info, 3, "options");
  const bool train = BoolField(opt, "train"), keep = BoolField(opt, "keepTape");
  // options.fused: the folded attention weights of guardFuse, for eval-mode scoring.
  gd::FusedAttention fused{};
  const bool use_fused = !opt.Get("fused").IsUndefined();
  if (use_fused) {
    if (dims.aggregation != gd::Aggregation::Attention || train || keep)
      Bad(env, "options.fused needs the attention aggregation, train false and keepTape false");
    Napi::Value fv = opt.Get("fused");
    if (!fv.IsObject()) Bad(env, "options.fused must be an object of Float32Arrays");
    const float* ptrs[4];
    for (int i = 0; i < 4; ++i) {
      Napi::Value a = fv.As<Napi::Object>().Get(kFusedNames[i]);
      if (!IsType(a, napi_float32_array) || int64_t(a.As<Napi::Float32Array>().ElementLength()) != FusedSize(i, dims))
        Bad(env, std::string("options.fused[\"") + kFusedNames[i] + "\"] must be a Float32Array of " + std::to_string(FusedSize(i, dims)) + " values");
      ptrs[i] = held.hold(a.As<Napi::Float32Array>());
    }
    fused = {ptrs[0], ptrs[1], ptrs[2], ptrs[3]};
  }
  const double seed = NumberField(opt, "seed");
  if (!(seed >= 0 && seed <= 9007199254740991.0) || seed != std::floor(seed))
    Bad(env, "field seed must be an integer in [0, 2^53)");
  Napi::Array out_list = Napi::Array::New(env, items.lengths.size());
  std::vector<float*> outs;
  for (size_t i = 0; i < items.lengths.size(); ++i) {
    Napi::Float32Array a = Napi::Float32Array::New(env, size_t(items.lengths[i]));
    out_list.Set(uint32_t(i), a);
    outs.push_back(a.Data());
  }
  auto* w = new ForwardWorker(env, std::move(held), dims, params, std::move(items), std::move(outs), out_list, train,
                              uint64_t(seed), keep, use_fused ? &fused : nullptr);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

class BackwardWorker : public CodedWorker {
 public:
  BackwardWorker(Napi::Env env, Held held, gd::Dims dims, gd::Params params, gd::Grads grads, TapePtr tape,
                 std::vector<const float*> dtokens, std::vector<std::vector<float*>> dhidden, Napi::Array result)
      : CodedWorker(env), held_(std::move(held)), dims_(dims), params_(params), grads_(grads), tape_(std::move(tape)),
        dtokens_(std::move(dtokens)), dhidden_(std::move(dhidden)), result_(Napi::Persistent(result)) {}

 protected:
  void Compute() override {
    const gd::Tape& tp = *tape_;
    const int64_t N = tp.N, d = dims_.d;
    std::vector<float> dscore(static_cast<size_t>(N)), dh(static_cast<size_t>(dims_.m * N * d));
    int64_t t0 = 0;
    std::vector<int64_t> starts;
    for (size_t i = 0; i < dtokens_.size(); ++i) {
      starts.push_back(t0);
      const int64_t T = lengths[i];
      if (T > 0) std::memcpy(dscore.data() + t0, dtokens_[i], size_t(T) * 4);
      t0 += T;
    }
    gd::guard_backward(dh.data(), grads_, dscore.data(), tp, dims_, params_, dg::ThreadPool::global());
    for (size_t i = 0; i < dhidden_.size(); ++i) {
      const int64_t T = lengths[i];
      for (int64_t l = 0; l < dims_.m; ++l)
        if (T > 0) std::memcpy(dhidden_[i][size_t(l)], dh.data() + (l * N + starts[i]) * d, size_t(T * d) * 4);
    }
  }
  Napi::Value Result(Napi::Env) override { return result_.Value(); }

 public:
  std::vector<int64_t> lengths;

 private:
  Held held_;
  gd::Dims dims_;
  gd::Params params_;
  gd::Grads grads_;
  TapePtr tape_;
  std::vector<const float*> dtokens_;
  std::vector<std::vector<float*>> dhidden_;
  Napi::Reference<Napi::Array> result_;
};

// guardBackward(spec, params, grads, tape, lengths: number[], dTokens: Float32Array[])
//   -> Promise<Float32Array[][]> (d(loss)/d(hidden) per item per layer).
// grads accumulate; the tape's forward must have used the same spec and params.
Napi::Value GuardBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5) Bad(env, "guardBackward(spec, params, grads, tape, dTokens)");
  const gd::Dims dims = ParseDims(env, info[0]);
  Held held;
  gd::Params params;
  gd::Grads grads;
  ParseTensors(env, info[1], dims, "params", false, held, params.t);
  ParseTensors(env, info[2], dims, "grads", true, held, grads.t);
  if (!info[3].IsExternal()) Bad(env, "tape must be a handle from guardForward({ keepTape: true })");
  TapePtr tape = *info[3].As<Napi::External<TapePtr>>().Data();
  if (int64_t(tape->h.size()) != dims.m * tape->N * dims.d) Bad(env, "the tape was made with another spec");
  if (!info[4].IsArray()) Bad(env, "dTokens must be an array of Float32Arrays");
  Napi::Array dl = info[4].As<Napi::Array>();
  std::vector<const float*> dtokens;
  std::vector<int64_t> lengths;
  int64_t total = 0;
  for (uint32_t i = 0; i < dl.Length(); ++i) {
    Napi::Value a = dl.Get(i);
    if (!IsType(a, napi_float32_array)) Bad(env, "dTokens[" + std::to_string(i) + "] must be a Float32Array");
    Napi::Float32Array f = a.As<Napi::Float32Array>();
    dtokens.push_back(held.hold(f));
    lengths.push_back(int64_t(f.ElementLength()));
    total += int64_t(f.ElementLength());
  }
  if (total != tape->N) Bad(env, "dTokens hold " + std::to_string(total) + " values, the forward scored " + std::to_string(tape->N) + " tokens");
  Napi::Array result = Napi::Array::New(env, lengths.size());
  std::vector<std::vector<float*>> dhidden;
  for (size_t i = 0; i < lengths.size(); ++i) {
    Napi::Array layers = Napi::Array::New(env, size_t(dims.m));
    std::vector<float*> ptrs;
    for (int64_t l = 0; l < dims.m; ++l) {
      Napi::Float32Array a = Napi::Float32Array::New(env, size_t(lengths[i] * dims.d));
      layers.Set(uint32_t(l), a);
      ptrs.push_back(a.Data());
    }
    result.Set(uint32_t(i), layers);
    dhidden.push_back(std::move(ptrs));
  }
  auto* w = new BackwardWorker(env, std::move(held), dims, params, grads, std::move(tape), std::move(dtokens),
                               std::move(dhidden), result);
  w->lengths = std::move(lengths);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

class FuseWorker : public CodedWorker {
 public:
  FuseWorker(Napi::Env env, Held held, gd::Dims dims, gd::Params params, std::vector<float*> outs, Napi::Object result)
      : CodedWorker(env), held_(std::move(held)), dims_(dims), params_(params), outs_(std::move(outs)),
        result_(Napi::Persistent(result)) {}

 protected:
  void Compute() override {
    gd::guard_fuse(outs_[0], outs_[1], outs_[2], outs_[3], dims_, params_, dg::ThreadPool::global());
  }
  Napi::Value Result(Napi::Env) override { return result_.Value(); }

 private:
  Held held_;
  gd::Dims dims_;
  gd::Params params_;
  std::vector<float*> outs_;
  Napi::Reference<Napi::Object> result_;
};

// guardFuse(spec, params) -> Promise<{ "fused.query_key", ... }> (attention only).
Napi::Value GuardFuse(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2) Bad(env, "guardFuse(spec, params)");
  const gd::Dims dims = ParseDims(env, info[0]);
  if (dims.aggregation != gd::Aggregation::Attention) Bad(env, "guardFuse: only the attention aggregation folds");
  Held held;
  gd::Params params;
  ParseTensors(env, info[1], dims, "params", false, held, params.t);
  Napi::Object result = Napi::Object::New(env);
  std::vector<float*> outs;
  for (int i = 0; i < 4; ++i) {
    Napi::Float32Array a = Napi::Float32Array::New(env, size_t(FusedSize(i, dims)));
    result.Set(kFusedNames[i], a);
    outs.push_back(a.Data());
  }
  auto* w = new FuseWorker(env, std::move(held), dims, params, std::move(outs), result);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

void InitGuard(Napi::Env env, Napi::Object exports) {
  exports.Set("guardForward", Napi::Function::New(env, GuardForward, "guardForward"));
  exports.Set("guardBackward", Napi::Function::New(env, GuardBackward, "guardBackward"));
  exports.Set("guardFuse", Napi::Function::New(env, GuardFuse, "guardFuse"));
}

}  // namespace dg_bind
