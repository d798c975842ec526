// NativeScheduler: the serving scheduler (native/serve) as a JS object.
#pragma once
#include <napi.h>

namespace dg_bind {
void InitServe(Napi::Env env, Napi::Object exports);
}
