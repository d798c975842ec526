// `testing` functions for the block-quantized formats and kernels: quantize /
// dequantize a matrix, and the linear kernel on quantized weights, so uvu tests
// can check them on every ISA against a float64 reference of the dequantized
// weights. Not part of the public API.
#include "bindings/testing_quant.h"

#include <cmath>
#include <string>

#include "bindings/convert.h"
#include "core/cpu_features.h"
#include "core/thread_pool.h"
#include "kernels/ops.h"
#include "quant/formats.h"
#include "quant/layout.h"
#include "quant/quantize.h"

namespace dg_bind {
namespace {

[[noreturn]] void Bad(Napi::Env env, const std::string& msg) { ThrowCoded(env, "ERR_ARGUMENT", msg); }

template <typename Array>
Array Typed(const Napi::CallbackInfo& info, size_t i, napi_typedarray_type type, const char* what) {
  if (info.Length() <= i || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != type)
    Bad(info.Env(), std::string(what) + " has the wrong type");
  return info[i].As<Array>();
}

int64_t Dim(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsNumber()) Bad(info.Env(), std::string(name) + " must be a number");
  const double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 1 && d <= double(1 << 24)) || d != std::floor(d)) Bad(info.Env(), std::string(name) + " must be an integer in [1, 2^24]");
  return int64_t(d);
}

dg::DType Format(const Napi::CallbackInfo& info, size_t i) {
  dg::DType t;
  if (info.Length() <= i || !info[i].IsString() || !dg::parse_quant_format(info[i].As<Napi::String>().Utf8Value().c_str(), &t))
    ThrowCoded(info.Env(), "ERR_QUANT_FORMAT", "format must be \"q8_0\", \"q4_0\" or \"q4_k\"");
  return t;
}

// rows x cols with cols whole blocks, and the byte size of such a matrix.
int64_t MatrixBytes(Napi::Env env, dg::DType t, int64_t rows, int64_t cols) {
  if (cols % dg::dtype_block_elems(t) != 0)
    ThrowCoded(env, "ERR_QUANT_BLOCK", "cols = " + std::to_string(cols) + " is not a multiple of the " +
                                           dg::dtype_name(t) + " block size " + std::to_string(dg::dtype_block_elems(t)));
  if (rows * cols > (int64_t(1) << 28)) Bad(env, "matrix is too large");
  return rows * dg::dtype_row_bytes(t, cols);
}

// quantize(x: Float32Array [rows][cols], rows, cols, format) -> Uint8Array of blocks
Napi::Value Quantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto x = Typed<Napi::Float32Array>(info, 0, napi_float32_array, "x");
  const int64_t rows = Dim(info, 1, "rows"), cols = Dim(info, 2, "cols");
  const dg::DType t = Format(info, 3);
  const int64_t bytes = MatrixBytes(env, t, rows, cols);
  if (int64_t(x.ElementLength()) != rows * cols) Bad(env, "x must hold rows * cols floats");
  auto out = Napi::Uint8Array::New(env, size_t(bytes));
  Guarded(env, [&] {
    dg::quantize_matrix(dg::Matrix{x.Data(), dg::DType::F32, rows, cols}, t, out.Data(), dg::ThreadPool::global());
  });
  return out;
}

// dequantize(bytes: Uint8Array, rows, cols, format) -> Float32Array [rows][cols]
Napi::Value Dequantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto w = Typed<Napi::Uint8Array>(info, 0, napi_uint8_array, "bytes");
  const int64_t rows = Dim(info, 1, "rows"), cols = Dim(info, 2, "cols");
  const dg::DType t = Format(info, 3);
  if (int64_t(w.ByteLength()) != MatrixBytes(env, t, rows, cols)) Bad(env, "bytes has the wrong length for rows x cols");
  auto out = Napi::Float32Array::New(env, size_t(rows * cols));
  Guarded(env, [&] {
    std::vector<char> blocks(size_t(dg::dtype_row_bytes(t, cols)));
    for (int64_t r = 0; r < rows; ++r) {
      dg::gather_row(dg::quant_row(w.Data(), t, rows, cols, r), t, cols / dg::dtype_block_elems(t), blocks.data());
      dg::dequantize_row(t, blocks.data(), out.Data() + r * cols, cols);
    }
  });
  return out;
}

// linearQ(x, T, bytes, format, rows, cols, bias | null, accumulateInto | null) -> [T][rows]
Napi::Value LinearQ(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto x = Typed<Napi::Float32Array>(info, 0, napi_float32_array, "x");
  const int64_t T = Dim(info, 1, "T");
  auto w = Typed<Napi::Uint8Array>(info, 2, napi_uint8_array, "bytes");
  const dg::DType t = Format(info, 3);
  const int64_t rows = Dim(info, 4, "rows"), cols = Dim(info, 5, "cols");
  if (int64_t(w.ByteLength()) != MatrixBytes(env, t, rows, cols)) Bad(env, "bytes has the wrong length for rows x cols");
  if (int64_t(x.ElementLength()) != T * cols) Bad(env, "x must hold T * cols floats");
  const float* bias = nullptr;
  if (info.Length() > 6 && !info[6].IsNull() && !info[6].IsUndefined()) {
    auto b = Typed<Napi::Float32Array>(info, 6, napi_float32_array, "bias");
    if (int64_t(b.ElementLength()) != rows) Bad(env, "bias must hold rows floats");
    bias = b.Data();
  }
  const bool acc = info.Length() > 7 && !info[7].IsNull() && !info[7].IsUndefined();
  auto y = acc ? Typed<Napi::Float32Array>(info, 7, napi_float32_array, "accumulateInto")
               : Napi::Float32Array::New(env, size_t(T * rows));
  if (int64_t(y.ElementLength()) != T * rows) Bad(env, "accumulateInto must hold T * rows floats");
  return Guarded(env, [&] {
    dg::linear_forward(y.Data(), x.Data(), dg::Matrix{w.Data(), t, rows, cols}, bias, T, dg::ThreadPool::global(), acc);
    return y;
  });
}

Napi::Value QuantInfo(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("avx512vnni", dg::cpu_features().avx512vnni);
  o.Set("amx", dg::amx_active());
  return o;
}

// setAmx(enabled): AMX for 16+ token calls on BF16 and quantized weights on or off (when the CPU has it).
Napi::Value SetAmx(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsBoolean()) Bad(info.Env(), "setAmx needs a boolean");
  dg::set_amx_enabled(info[0].As<Napi::Boolean>().Value());
  return info.Env().Undefined();
}

}  // namespace

void AddQuantTestingOps(Napi::Env env, Napi::Object& o) {
  o.Set("quantize", Napi::Function::New(env, Quantize, "quantize"));
  o.Set("dequantize", Napi::Function::New(env, Dequantize, "dequantize"));
  o.Set("linearQ", Napi::Function::New(env, LinearQ, "linearQ"));
  o.Set("quantInfo", Napi::Function::New(env, QuantInfo, "quantInfo"));
  o.Set("setAmx", Napi::Function::New(env, SetAmx, "setAmx"));
}

}  // namespace dg_bind
