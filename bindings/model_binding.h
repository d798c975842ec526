// NativeModel / NativeSession classes and engine-level functions.
#pragma once
#include <napi.h>

#include <memory>
#include <string>

namespace dg {
class Transformer;
class Session;
}  // namespace dg

namespace dg_bind {
void InitModel(Napi::Env env, Napi::Object exports);
// The live engine behind a NativeModel / NativeSession (ERR_ARGUMENT for other
// values, ERR_DISPOSED after dispose()).
std::shared_ptr<dg::Transformer> UnwrapModel(Napi::Env env, const Napi::Value& v, const char* what);
std::shared_ptr<dg::Session> UnwrapSession(Napi::Env env, const Napi::Value& v, const std::string& what);
}  // namespace dg_bind
