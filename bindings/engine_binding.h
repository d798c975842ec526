// sampleToken, systemInfo, measureBandwidth.
#pragma once
#include <napi.h>

namespace dg_bind {
void InitEngine(Napi::Env env, Napi::Object exports);
}
