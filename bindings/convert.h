// Argument checking and error translation shared by the binding files.
#pragma once
#include <napi.h>

#include <cmath>
#include <string>
#include <vector>

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

// The largest integer a JavaScript number holds exactly (2^53 - 1).
constexpr int64_t kMaxSafeInteger = 9007199254740991LL;

// A finite number; `what` names the argument or field in the error.
inline double ToFinite(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsNumber()) ThrowCoded(env, "ERR_ARGUMENT", what + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) ThrowCoded(env, "ERR_ARGUMENT", what + " must be a finite number");
  return d;
}

// An integer in [lo, hi], checked before any conversion (a double outside
// int64's range, or NaN, must never reach a cast: that is undefined behaviour).
inline int64_t ToInt(Napi::Env env, const Napi::Value& v, const std::string& what, int64_t lo = -kMaxSafeInteger,
                     int64_t hi = kMaxSafeInteger) {
  const double d = ToFinite(env, v, what);
  if (d != std::floor(d) || d < double(lo) || d > double(hi))
    ThrowCoded(env, "ERR_ARGUMENT", what + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return int64_t(d);
}

inline bool ToBool(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsBoolean()) ThrowCoded(env, "ERR_ARGUMENT", what + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

// The typed array's elements; rejects other types and detached buffers.
template <typename TA>
inline TA ToTypedArray(Napi::Env env, const Napi::Value& v, napi_typedarray_type type, const std::string& what,
                       const char* type_name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
    ThrowCoded(env, "ERR_ARGUMENT", what + " must be a " + type_name);
  TA a = v.As<TA>();
  bool detached = false;
  if (napi_is_detached_arraybuffer(env, a.ArrayBuffer(), &detached) != napi_ok || detached)
    ThrowCoded(env, "ERR_ARGUMENT", what + " is a view of a detached ArrayBuffer");
  return a;
}
inline Napi::Float32Array ToFloat32Array(Napi::Env env, const Napi::Value& v, const std::string& what) {
  return ToTypedArray<Napi::Float32Array>(env, v, napi_float32_array, what, "Float32Array");
}
inline Napi::Int32Array ToInt32Array(Napi::Env env, const Napi::Value& v, const std::string& what) {
  return ToTypedArray<Napi::Int32Array>(env, v, napi_int32_array, what, "Int32Array");
}

// An array of integers in [lo, hi], at most max_len of them.
inline std::vector<int32_t> ToIntList(Napi::Env env, const Napi::Value& v, const std::string& what, int32_t lo,
                                      int32_t hi, uint32_t max_len = 1u << 24) {
  if (!v.IsArray()) ThrowCoded(env, "ERR_ARGUMENT", what + " must be an array of integers");
  Napi::Array a = v.As<Napi::Array>();
  if (a.Length() > max_len) ThrowCoded(env, "ERR_ARGUMENT", what + " has more than " + std::to_string(max_len) + " entries");
  std::vector<int32_t> out;
  out.reserve(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i)
    out.push_back(int32_t(ToInt(env, a.Get(i), what + "[" + std::to_string(i) + "]", lo, hi)));
  return out;
}

inline double NumberField(const Napi::Object& o, const char* key) {
  return ToFinite(o.Env(), o.Get(key), std::string("field ") + key);
}

// An integer field in [lo, hi] (by default any integer a JS number holds exactly).
inline int64_t IntField(const Napi::Object& o, const char* key, int64_t lo = -kMaxSafeInteger,
                        int64_t hi = kMaxSafeInteger) {
  return ToInt(o.Env(), o.Get(key), std::string("field ") + key, lo, hi);
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
