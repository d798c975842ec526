// Backward kernels added to the `testing` object (see testing_ops.h).
#pragma once
#include <napi.h>

namespace dg_bind {
void AddBackwardTestingOps(Napi::Env env, Napi::Object testing);
}
