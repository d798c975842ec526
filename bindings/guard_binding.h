// The guard's aggregator + analyzer over a batch of sequences: guardForward,
// guardBackward (native/guard/guard.h), plus each op alone for the tests.
#pragma once
#include <napi.h>

namespace dg_bind {
void InitGuard(Napi::Env env, Napi::Object exports);
}
