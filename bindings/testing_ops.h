// Exposes individual CPU kernels to JS so uvu tests can check each op (on each
// ISA) against a float64 reference. Not part of the public API.
#pragma once
#include <napi.h>

namespace dg_bind {
Napi::Object InitTestingOps(Napi::Env env);
}
