// LoRA training passes over a NativeModel: trainForward -> NativeTrainPass.backward.
#pragma once
#include <napi.h>

namespace dg_bind {
void InitLoraTrain(Napi::Env env, Napi::Object exports);
}
