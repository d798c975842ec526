// NativeModel / NativeSession classes and engine-level functions.
#pragma once
#include <napi.h>

#include <memory>

#include "model/transformer.h"

namespace dg_bind {
void InitModel(Napi::Env env, Napi::Object exports);
// The engine behind a NativeModel object (ERR_ARGUMENT if v is not one, ERR_DISPOSED after dispose()).
std::shared_ptr<dg::Transformer> ModelFromValue(Napi::Env env, Napi::Value v);
// The ModelConfig of a toNativeConfig() object (lib/model/config.ts).
dg::ModelConfig ModelConfigFromObject(const Napi::Object& o);
}
