// NativeScheduler: submits requests to the model's scheduler thread (native/serve)
// and delivers its events to JavaScript through one thread-safe function. The
// compute runs on the scheduler's own thread and the engine's pool, never on
// libuv's worker pool. The thread-safe function is referenced only while
// requests are in flight, so an idle model does not keep the process alive.
#include "bindings/serve_binding.h"

#include <atomic>
#include <cstring>
#include <memory>
#include <unordered_map>
#include <unordered_set>

#include "bindings/convert.h"
#include "bindings/model_binding.h"
#include "serve/scheduler.h"

namespace dg_bind {
namespace {

// Shared by the JS wrapper and the thread-safe function, either of which may
// be finalized first (at environment teardown the thread-safe function can go
// before the wrapper); the scheduler thread is stopped before either lets go.
struct Hub {
  std::unique_ptr<dg::Scheduler> scheduler;
  Napi::ThreadSafeFunction tsfn;
  bool tsfn_alive = true;
  std::atomic<bool> notify_queued{false};
  std::unordered_map<uint64_t, std::shared_ptr<Napi::FunctionReference>> callbacks;
  bool closing = false;
  int64_t vocab = 0, hidden = 0;

  std::unordered_set<uint64_t> awaiting;  // stepwise requests waiting for resume()
  bool reffed = false;

  // The process is kept alive while some request will still make progress on
  // its own; requests that wait for resume() (an abandoned stepwise generation)
  // do not hold it open.
  void update_ref(Napi::Env env) {
    const bool want = callbacks.size() > awaiting.size();
    if (want != reffed && tsfn_alive) {
      if (want) tsfn.Ref(env);
      else tsfn.Unref(env);
      reffed = want;
    }
    if (callbacks.empty() && closing) scheduler.reset();  // idle: joins at once, drops the model
  }

  // On the JS thread: hands every ready event to its request's callback.
  void deliver(Napi::Env env) {
    notify_queued.store(false);
    if (!scheduler) return;
    Napi::HandleScope scope(env);
    for (dg::ServeEvent& ev : scheduler->drain()) {
      auto it = callbacks.find(ev.id);
      if (it == callbacks.end()) continue;
      std::shared_ptr<Napi::FunctionReference> cb = it->second;
      if (ev.done) {
        callbacks.erase(it);
        awaiting.erase(ev.id);
      } else if (ev.awaiting) {
        awaiting.insert(ev.id);
      }
      Napi::Object o = Napi::Object::New(env);
      o.Set("id", double(ev.id));
      Napi::Array tokens = Napi::Array::New(env, ev.tokens.size());
      for (size_t i = 0; i < ev.tokens.size(); ++i) tokens.Set(uint32_t(i), ev.tokens[i]);
      o.Set("tokens", tokens);
      o.Set("fed", double(ev.fed));
      if (!ev.logprobs.empty()) o.Set("logprobs", Copy(env, ev.logprobs));
      o.Set("hidden", Copy(env, ev.hidden));
      o.Set("logits", Copy(env, ev.logits));
      o.Set("awaiting", ev.awaiting);
      o.Set("done", ev.done);
      if (!ev.finish.empty()) o.Set("finishReason", ev.finish);
      if (!ev.code.empty()) {
        o.Set("code", ev.code);
        o.Set("message", ev.message);
      }
      try {
        cb->Call({o});
      } catch (const Napi::Error& e) {
        // lib/serve never throws from its handlers; report anything else as
        // an uncaught exception rather than losing the other events.
        napi_fatal_exception(env, e.Value());
      }
    }
    update_ref(env);
  }

  static Napi::Float32Array Copy(Napi::Env env, const std::vector<float>& v) {
    Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
    if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(float));
    return a;
  }
};

dg::ServeRequest ParseRequest(Napi::Env env, const Napi::Value& v, const std::string& at, int64_t vocab,
                              int32_t n_layers) {
  if (!v.IsObject()) ThrowCoded(env, "ERR_ARGUMENT", at + " must be an object");
  Napi::Object o = v.As<Napi::Object>();
  dg::ServeRequest q;
  const std::string kind = StringField(o, "kind");
  if (kind == "eval") q.kind = dg::ServeRequest::Kind::Eval;
  else if (kind == "generate") q.kind = dg::ServeRequest::Kind::Generate;
  else ThrowCoded(env, "ERR_ARGUMENT", at + ".kind must be \"eval\" or \"generate\"");
  q.session = UnwrapSession(env, o.Get("session"), at + ".session");
  Napi::Int32Array t = ToInt32Array(env, o.Get("tokens"), at + ".tokens");
  q.tokens.assign(t.Data(), t.Data() + t.ElementLength());
  q.capture = ToIntList(env, o.Get("capture"), at + ".capture", 0, n_layers, uint32_t(n_layers) + 1);
  Napi::Value adapter = o.Get("adapter");
  if (!adapter.IsUndefined()) q.use_adapter = ToBool(env, adapter, at + ".adapter");
  if (q.kind == dg::ServeRequest::Kind::Eval) {
    const std::string mode = StringField(o, "logits");
    if (mode == "none") q.logits = dg::LogitsMode::None;
    else if (mode == "last") q.logits = dg::LogitsMode::Last;
    else if (mode == "all") q.logits = dg::LogitsMode::All;
    else ThrowCoded(env, "ERR_ARGUMENT", at + ".logits must be \"none\", \"last\" or \"all\"");
    return q;
  }
  const double temperature = ToFinite(env, o.Get("temperature"), at + ".temperature");
  if (temperature < 0) ThrowCoded(env, "ERR_ARGUMENT", at + ".temperature must be >= 0");
  q.sampling.temperature = float(temperature);
  q.sampling.top_k = int32_t(ToInt(env, o.Get("topK"), at + ".topK", 0, INT32_MAX));
  const double top_p = ToFinite(env, o.Get("topP"), at + ".topP");
  if (!(top_p > 0 && top_p <= 1)) ThrowCoded(env, "ERR_ARGUMENT", at + ".topP must be in (0, 1]");
  q.sampling.top_p = float(top_p);
  q.seed = uint64_t(ToInt(env, o.Get("seed"), at + ".seed", 0, kMaxSafeInteger));
  q.max_tokens = ToInt(env, o.Get("maxTokens"), at + ".maxTokens", 1, int64_t(1) << 30);
  q.stop_ids = ToIntList(env, o.Get("stopIds"), at + ".stopIds", 0, int32_t(vocab - 1), 1u << 20);
  Napi::Value bias = o.Get("logitBias");
  if (!bias.IsUndefined() && !bias.IsNull()) {
    Napi::Float32Array b = ToFloat32Array(env, bias, at + ".logitBias");
    if (int64_t(b.ElementLength()) != vocab)
      ThrowCoded(env, "ERR_ARGUMENT", at + ".logitBias must have " + std::to_string(vocab) + " entries (the vocabulary)");
    q.logit_bias.assign(b.Data(), b.Data() + b.ElementLength());
  }
  Napi::Value stepwise = o.Get("stepwise");
  if (!stepwise.IsUndefined()) q.stepwise = ToBool(env, stepwise, at + ".stepwise");
  Napi::Value pause_every = o.Get("pauseEvery");
  if (!pause_every.IsUndefined()) q.pause_every = ToInt(env, pause_every, at + ".pauseEvery", 0, int64_t(1) << 30);
  Napi::Value pause_head = o.Get("pauseHead");
  if (!pause_head.IsUndefined()) q.pause_head = ToInt(env, pause_head, at + ".pauseHead", 0, int64_t(1) << 30);
  Napi::Value keep = o.Get("keepSession");
  if (!keep.IsUndefined()) q.keep_session = ToBool(env, keep, at + ".keepSession");
  Napi::Value logprobs = o.Get("logprobs");
  if (!logprobs.IsUndefined()) q.logprobs = ToBool(env, logprobs, at + ".logprobs");
  return q;
}

class NativeScheduler : public Napi::ObjectWrap<NativeScheduler> {
 public:
  static Napi::FunctionReference ctor;
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeScheduler",
                       {InstanceMethod<&NativeScheduler::Submit>("submit"),
                        InstanceMethod<&NativeScheduler::Cancel>("cancel"),
                        InstanceMethod<&NativeScheduler::Resume>("resume"),
                        InstanceMethod<&NativeScheduler::Stats>("stats"),
                        InstanceMethod<&NativeScheduler::Close>("close")});
  }

  // new NativeScheduler(model, { prefillChunk, maxPositions })
  explicit NativeScheduler(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeScheduler>(info) {
    Napi::Env env = info.Env();
    std::shared_ptr<dg::Transformer> model = UnwrapModel(env, info.Length() > 0 ? info[0] : env.Undefined(), "model");
    Napi::Object o = ArgObject(info, 1, "scheduler options");
    const int64_t chunk = IntField(o, "prefillChunk", 4, dg::Transformer::kMaxRowsPerPass);
    const int64_t max_positions = IntField(o, "maxPositions", 0, kMaxSafeInteger);
    hub_ = std::make_shared<Hub>();
    hub_->vocab = model->config().vocab;
    hub_->hidden = model->config().hidden;
    n_layers_ = int32_t(model->config().n_layers);
    Hub* hub = hub_.get();
    hub_->tsfn = Napi::ThreadSafeFunction::New(
        env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}), "deepguard-scheduler", 0, 1,
        new std::shared_ptr<Hub>(hub_), [](Napi::Env, std::shared_ptr<Hub>* h) {
          (*h)->scheduler.reset();  // no notification may reach a finalized function
          (*h)->tsfn_alive = false;
          delete h;
        });
    hub_->tsfn.Unref(env);
    try {
      hub_->scheduler = std::make_unique<dg::Scheduler>(model, chunk, max_positions, [hub] {
        if (!hub->notify_queued.exchange(true))
          hub->tsfn.NonBlockingCall([hub](Napi::Env env, Napi::Function) { hub->deliver(env); });
      });
    } catch (const dg::Error& e) {
      hub_->tsfn.Release();
      hub_.reset();
      ThrowCoded(env, e.code(), e.what());
    }
  }

  ~NativeScheduler() override {
    if (!hub_) return;
    hub_->scheduler.reset();  // stops the thread: no more notifications
    hub_->callbacks.clear();
    if (hub_->tsfn_alive) hub_->tsfn.Release();
  }

 private:
  Hub* live(Napi::Env env) {
    if (!hub_ || !hub_->scheduler || hub_->closing) ThrowCoded(env, "ERR_DISPOSED", "this model has been disposed");
    return hub_.get();
  }

  // submit(requests: object[], onEvent: (event) => void) -> ids: number[]
  Napi::Value Submit(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Hub* hub = live(env);
    if (info.Length() < 2 || !info[0].IsArray() || !info[1].IsFunction())
      ThrowCoded(env, "ERR_ARGUMENT", "submit(requests[], onEvent) expects an array and a function");
    Napi::Array ra = info[0].As<Napi::Array>();
    if (ra.Length() == 0 || ra.Length() > 4096) ThrowCoded(env, "ERR_ARGUMENT", "submit: 1 to 4096 requests");
    std::vector<dg::ServeRequest> reqs;
    for (uint32_t i = 0; i < ra.Length(); ++i)
      reqs.push_back(ParseRequest(env, ra.Get(i), "requests[" + std::to_string(i) + "]", hub->vocab, n_layers_));
    std::vector<uint64_t> ids = Guarded(env, [&] { return hub->scheduler->submit(std::move(reqs)); });
    auto cb = std::make_shared<Napi::FunctionReference>(Napi::Persistent(info[1].As<Napi::Function>()));
    Napi::Array out = Napi::Array::New(env, ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      hub->callbacks[ids[i]] = cb;
      out.Set(uint32_t(i), double(ids[i]));
    }
    hub->update_ref(env);
    return out;
  }

  uint64_t IdArg(const Napi::CallbackInfo& info) {
    return uint64_t(ToInt(info.Env(), info.Length() > 0 ? info[0] : info.Env().Undefined(), "request id", 1,
                          kMaxSafeInteger));
  }

  void Cancel(const Napi::CallbackInfo& info) {
    const uint64_t id = IdArg(info);
    if (!hub_ || !hub_->scheduler) return;
    hub_->scheduler->cancel(id);
    if (hub_->awaiting.erase(id)) hub_->update_ref(info.Env());  // its end will be delivered
  }

  // resume(id, bias?: Float32Array | null): null clears the bias, undefined keeps it.
  void Resume(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const uint64_t id = IdArg(info);
    Hub* hub = live(env);
    std::optional<std::vector<float>> bias;
    if (info.Length() > 1 && info[1].IsNull()) {
      bias.emplace();
    } else if (info.Length() > 1 && !info[1].IsUndefined()) {
      Napi::Float32Array b = ToFloat32Array(env, info[1], "resume: bias");
      if (int64_t(b.ElementLength()) != hub->vocab)
        ThrowCoded(env, "ERR_ARGUMENT", "resume: bias must have " + std::to_string(hub->vocab) + " entries (the vocabulary)");
      bias.emplace(b.Data(), b.Data() + b.ElementLength());
    }
    Guarded(env, [&] { hub->scheduler->resume(id, std::move(bias)); });
    if (hub->awaiting.erase(id)) hub->update_ref(env);
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    const dg::ServeStats s = hub_ && hub_->scheduler ? hub_->scheduler->stats() : dg::ServeStats{};
    o.Set("active", double(s.active));
    o.Set("iterations", double(s.iterations));
    o.Set("maxBatchRows", double(s.max_batch_rows));
    o.Set("prefillChunk", double(hub_ && hub_->scheduler ? hub_->scheduler->prefill_chunk() : 0));
    return o;
  }

  // No new requests; the scheduler (and its reference to the model) goes once
  // the requests in flight have finished.
  void Close(const Napi::CallbackInfo& info) {
    if (!hub_ || hub_->closing) return;
    hub_->closing = true;
    hub_->update_ref(info.Env());
  }

  std::shared_ptr<Hub> hub_;
  int32_t n_layers_ = 0;
};
Napi::FunctionReference NativeScheduler::ctor;

}  // namespace

void InitServe(Napi::Env env, Napi::Object exports) {
  NativeScheduler::ctor = Napi::Persistent(NativeScheduler::Define(env));
  exports.Set("NativeScheduler", NativeScheduler::ctor.Value());
}

}  // namespace dg_bind
