// Addon entry: each binding file registers its own exports.
#include <napi.h>

#include "bindings/engine_binding.h"
#include "bindings/guard_binding.h"
#include "bindings/lora_train_binding.h"
#include "bindings/model_binding.h"
#include "bindings/pretrain_binding.h"
#include "bindings/serve_binding.h"
#include "bindings/testing_backward.h"
#include "bindings/testing_ops.h"
#include "bindings/train_binding.h"

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  dg_bind::InitModel(env, exports);
  dg_bind::InitEngine(env, exports);
  dg_bind::InitServe(env, exports);
  dg_bind::InitTrain(env, exports);
  dg_bind::InitLoraTrain(env, exports);
  dg_bind::InitGuard(env, exports);
  Napi::Object testing = dg_bind::InitTestingOps(env);
  dg_bind::AddBackwardTestingOps(env, testing);
  exports.Set("testing", testing);
  dg_bind::InitPretrain(env, exports);
  return exports;
}

NODE_API_MODULE(deepguard, Init)
