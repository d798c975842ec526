// Full-parameter training model (native/train/full_model.h) for lib/train/pretrain.ts.
#pragma once
#include <napi.h>

namespace dg_bind {
void InitPretrain(Napi::Env env, Napi::Object exports);
}
