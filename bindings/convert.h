// Argument checking and error translation shared by the binding files.
#pragma once
#include <napi.h>

#include <string>

#include "core/tensor.h"

namespace dg_bind {

// Throws a JS TypeError/Error with `code` set, as lib/errors.ts expects.
[[noreturn]] inline void ThrowCoded(Napi::Env env, const std::string& code, const std::string& msg) {
  Napi::Error err = Napi::Error::New(env, msg);
  err.Set("code", Napi::String::New(env, code));
  throw err;
}

inline Napi::Object ArgObject(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsObject()) ThrowCoded(info.Env(), "ERR_ARGUMENT", std::string(what) + " must be an object");
  return info[i].As<Napi::Object>();
}

inline double NumberField(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) ThrowCoded(o.Env(), "ERR_ARGUMENT", std::string("field ") + key + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

inline int64_t IntField(const Napi::Object& o, const char* key) {
  double d = NumberField(o, key);
  if (d != double(int64_t(d))) ThrowCoded(o.Env(), "ERR_ARGUMENT", std::string("field ") + key + " must be an integer");
  return int64_t(d);
}

inline bool BoolField(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsBoolean()) ThrowCoded(o.Env(), "ERR_ARGUMENT", std::string("field ") + key + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

inline std::string StringField(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsString()) ThrowCoded(o.Env(), "ERR_ARGUMENT", std::string("field ") + key + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

// Runs fn, turning dg::Error / std::exception into coded JS errors.
template <typename Fn>
auto Guarded(Napi::Env env, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (const dg::Error& e) {
    ThrowCoded(env, e.code(), e.what());
  } catch (const std::bad_alloc&) {
    ThrowCoded(env, "ERR_OUT_OF_MEMORY", "out of memory");
  } catch (const std::exception& e) {
    ThrowCoded(env, "ERR_NATIVE", e.what());
  }
}

// AsyncWorker that keeps a dg::Error's code for the rejected promise.
class CodedWorker : public Napi::AsyncWorker {
 public:
  explicit CodedWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  // Subclasses implement Compute(); errors are captured with their code.
  virtual void Compute() = 0;
  virtual Napi::Value Result(Napi::Env env) = 0;

  void Execute() override {
    try {
      Compute();
    } catch (const dg::Error& e) {
      code_ = e.code();
      SetError(e.what());
    } catch (const std::bad_alloc&) {
      code_ = "ERR_OUT_OF_MEMORY";
      SetError("out of memory");
    } catch (const std::exception& e) {
      code_ = "ERR_NATIVE";
      SetError(e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(Result(Env())); }
  void OnError(const Napi::Error& e) override {
    Napi::Object err = e.Value();
    err.Set("code", Napi::String::New(Env(), code_));
    deferred_.Reject(err);
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::string code_ = "ERR_NATIVE";
};

}  // namespace dg_bind
