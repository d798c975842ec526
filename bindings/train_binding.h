// Optimizer primitives shared by every trainer: adamwStep, clipGradients.
#pragma once
#include <napi.h>

namespace dg_bind {
void InitTrain(Napi::Env env, Napi::Object exports);
}
