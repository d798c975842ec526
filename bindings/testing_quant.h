// Testing functions for the quantized formats and kernels (see testing_quant.cpp).
#pragma once
#include <napi.h>

namespace dg_bind {
void AddQuantTestingOps(Napi::Env env, Napi::Object& o);
}
