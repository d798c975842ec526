// NativeModel / NativeSession classes and engine-level functions.
#pragma once
#include <napi.h>

namespace dg_bind {
void InitModel(Napi::Env env, Napi::Object exports);
}
