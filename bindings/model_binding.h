// NativeModel / NativeSession classes and engine-level functions.
#pragma once
#include <napi.h>

#include <memory>
#include <string>

namespace dg {
class Transformer;
class Session;
struct ModelConfig;
}  // namespace dg

namespace dg_bind {
void InitModel(Napi::Env env, Napi::Object exports);
// The live engine behind a NativeModel / NativeSession (ERR_ARGUMENT for other
// values, ERR_DISPOSED after dispose()).
std::shared_ptr<dg::Transformer> UnwrapModel(Napi::Env env, const Napi::Value& v, const char* what);
std::shared_ptr<dg::Session> UnwrapSession(Napi::Env env, const Napi::Value& v, const std::string& what);
// The ModelConfig of a toNativeConfig() object (lib/model/config.ts).
dg::ModelConfig ModelConfigFromObject(const Napi::Object& o);
}  // namespace dg_bind
