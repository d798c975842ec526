// `testing`: each CPU kernel as a synchronous function over typed arrays, so the
// uvu tests can compare every op (on every ISA) with a float64 reference.
// Every argument is checked against the dims before any kernel reads memory.
#include "bindings/testing_ops.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "bindings/convert.h"
#include "bindings/testing_quant.h"
#include "core/cpu_features.h"
#include "core/thread_pool.h"
#include "kernels/ops.h"

namespace dg_bind {
namespace {

[[noreturn]] void Bad(Napi::Env env, const std::string& msg) { ThrowCoded(env, "ERR_ARGUMENT", msg); }

template <typename Array>
Array TypedArg(const Napi::CallbackInfo& info, size_t i, napi_typedarray_type type, const char* type_name,
               const char* name) {
  if (info.Length() <= i || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != type)
    Bad(info.Env(), std::string(name) + " must be a " + type_name);
  return info[i].As<Array>();
}
Napi::Float32Array F32Arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return TypedArg<Napi::Float32Array>(info, i, napi_float32_array, "Float32Array", name);
}
Napi::Uint8Array BytesArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return TypedArg<Napi::Uint8Array>(info, i, napi_uint8_array, "Uint8Array", name);
}
bool IsAbsent(const Napi::CallbackInfo& info, size_t i) {
  return info.Length() <= i || info[i].IsNull() || info[i].IsUndefined();
}

// An integer in [lo, 2^31 - 1]; products of up to three such dims fit in int64
// only when checked, see Mul.
int64_t IntArg(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t lo) {
  if (info.Length() <= i || !info[i].IsNumber()) Bad(info.Env(), std::string(name) + " must be a number");
  const double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= double(lo) && d <= 2147483647.0) || d != std::floor(d))
    Bad(info.Env(), std::string(name) + " must be an integer in [" + std::to_string(lo) + ", 2^31)");
  return int64_t(d);
}
double NumberArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsNumber()) Bad(info.Env(), std::string(name) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

int64_t Mul(Napi::Env env, int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r) || r > (int64_t(1) << 40)) Bad(env, "dimensions are too large");
  return r;
}

void ExpectLength(Napi::Env env, const char* name, size_t actual, int64_t expected, const char* dims) {
  if (int64_t(actual) != expected)
    Bad(env, std::string(name) + " has length " + std::to_string(actual) + ", expected " + std::to_string(expected) +
                 " (" + dims + ")");
}

dg::DType DTypeNamed(Napi::Env env, const std::string& s) {
  if (s == "F32") return dg::DType::F32;
  if (s == "F16") return dg::DType::F16;
  if (s == "BF16") return dg::DType::BF16;
  Bad(env, "dtype must be \"F32\", \"F16\" or \"BF16\"");
}

dg::DType DTypeArg(const Napi::CallbackInfo& info, size_t i) {
  return DTypeNamed(info.Env(), info.Length() > i && info[i].IsString() ? info[i].As<Napi::String>().Utf8Value() : "");
}

Napi::Float32Array NewF32(Napi::Env env, int64_t n) { return Napi::Float32Array::New(env, size_t(n)); }

// linear(x, T, wBytes, dtype, rows, cols, bias | null, accumulateInto | null, bf16Activations?):
// returns accumulateInto (updated in place) or a new [T][rows] array.
// bf16Activations (boolean, default false): linear_forward's flag (x rounded to
// BF16 for BF16 weights; AMX tiles where active).
Napi::Value Linear(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto x = F32Arg(info, 0, "x");
  const int64_t T = IntArg(info, 1, "T", 1);
  auto w = BytesArg(info, 2, "wBytes");
  const dg::DType dtype = DTypeArg(info, 3);
  const int64_t rows = IntArg(info, 4, "rows", 1), cols = IntArg(info, 5, "cols", 1);
  ExpectLength(env, "x", x.ElementLength(), Mul(env, T, cols), "T * cols");
  ExpectLength(env, "wBytes", w.ByteLength(), Mul(env, Mul(env, rows, cols), int64_t(dg::dtype_size(dtype))),
               "rows * cols * dtype size");
  const float* bias = nullptr;
  if (!IsAbsent(info, 6)) {
    auto b = F32Arg(info, 6, "bias");
    ExpectLength(env, "bias", b.ElementLength(), rows, "rows");
    bias = b.Data();
  }
  const bool accumulate = !IsAbsent(info, 7);
  auto y = accumulate ? F32Arg(info, 7, "accumulateInto") : NewF32(env, Mul(env, T, rows));
  ExpectLength(env, "accumulateInto", y.ElementLength(), Mul(env, T, rows), "T * rows");
  if (!IsAbsent(info, 8) && !info[8].IsBoolean()) Bad(env, "bf16Activations must be a boolean");
  const bool bf16_acts = !IsAbsent(info, 8) && info[8].As<Napi::Boolean>().Value();
  return Guarded(env, [&] {
    dg::Matrix m{w.Data(), dtype, rows, cols};
    dg::linear_forward(y.Data(), x.Data(), m, bias, T, dg::ThreadPool::global(), accumulate, bf16_acts);
    return y;
  });
}

// linearBackward(dy, x, T, wBytes, dtype, rows, cols, dx | null, dw | null, db | null):
// accumulates into the given gradient arrays in place (dx [T][cols], dw [rows][cols], db [rows]).
Napi::Value LinearBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto dy = F32Arg(info, 0, "dy");
  auto x = F32Arg(info, 1, "x");
  const int64_t T = IntArg(info, 2, "T", 1);
  auto w = BytesArg(info, 3, "wBytes");
  const dg::DType dtype = DTypeArg(info, 4);
  const int64_t rows = IntArg(info, 5, "rows", 1), cols = IntArg(info, 6, "cols", 1);
  ExpectLength(env, "dy", dy.ElementLength(), Mul(env, T, rows), "T * rows");
  ExpectLength(env, "x", x.ElementLength(), Mul(env, T, cols), "T * cols");
  ExpectLength(env, "wBytes", w.ByteLength(), Mul(env, Mul(env, rows, cols), int64_t(dg::dtype_size(dtype))),
               "rows * cols * dtype size");
  float* grads[3] = {nullptr, nullptr, nullptr};
  const char* names[3] = {"dx", "dw", "db"};
  const int64_t lengths[3] = {Mul(env, T, cols), Mul(env, rows, cols), rows};
  for (int i = 0; i < 3; ++i) {
    if (IsAbsent(info, size_t(7 + i))) continue;
    auto g = F32Arg(info, size_t(7 + i), names[i]);
    ExpectLength(env, names[i], g.ElementLength(), lengths[i], i == 0 ? "T * cols" : i == 1 ? "rows * cols" : "rows");
    grads[i] = g.Data();
  }
  if (grads[1] && dtype != dg::DType::F32) Bad(env, "dw needs F32 weights");
  return Guarded(env, [&] {
    dg::linear_backward(grads[0], grads[1], grads[2], dy.Data(), x.Data(), dg::Matrix{w.Data(), dtype, rows, cols}, T,
                        dg::ThreadPool::global());
    return env.Undefined();
  });
}

// rmsnorm(x, w, T, d, eps) -> new [T][d]
// linearMany(x, T, cols, weights: [{ bytes: Uint8Array, dtype, rows }]) -> Float32Array[]
// (one y[T][rows] per matrix, computed in a single linear_forward_many pass).
Napi::Value LinearMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto x = F32Arg(info, 0, "x");
  const int64_t T = IntArg(info, 1, "T", 1), cols = IntArg(info, 2, "cols", 1);
  ExpectLength(env, "x", x.ElementLength(), Mul(env, T, cols), "T * cols");
  if (info.Length() < 4 || !info[3].IsArray()) Bad(env, "weights must be an array");
  Napi::Array list = info[3].As<Napi::Array>();
  if (list.Length() == 0 || list.Length() > 8) Bad(env, "weights must hold 1 to 8 matrices");
  std::vector<dg::LinearOutput> outs;
  Napi::Array ys = Napi::Array::New(env, list.Length());
  for (uint32_t i = 0; i < list.Length(); ++i) {
    if (!list.Get(i).IsObject()) Bad(env, "weights[" + std::to_string(i) + "] must be an object");
    Napi::Object o = list.Get(i).As<Napi::Object>();
    Napi::Value bytes = o.Get("bytes");
    if (!bytes.IsTypedArray() || bytes.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      Bad(env, "weights[" + std::to_string(i) + "].bytes must be a Uint8Array");
    const dg::DType dtype = DTypeNamed(env, StringField(o, "dtype"));
    const int64_t rows = IntField(o, "rows");
    if (rows < 1 || rows > (int64_t(1) << 31)) Bad(env, "rows must be a positive integer");
    Napi::Uint8Array w = bytes.As<Napi::Uint8Array>();
    ExpectLength(env, "bytes", w.ByteLength(), Mul(env, Mul(env, rows, cols), int64_t(dg::dtype_size(dtype))),
                 "rows * cols * dtype size");
    Napi::Float32Array y = NewF32(env, Mul(env, T, rows));
    ys.Set(i, y);
    outs.push_back({y.Data(), dg::Matrix{w.Data(), dtype, rows, cols}, nullptr, false});
  }
  return Guarded(env, [&] {
    dg::linear_forward_many(outs.data(), int(outs.size()), x.Data(), T, dg::ThreadPool::global());
    return ys;
  });
}

Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto x = F32Arg(info, 0, "x");
  auto w = F32Arg(info, 1, "w");
  const int64_t T = IntArg(info, 2, "T", 1), d = IntArg(info, 3, "d", 1);
  const double eps = NumberArg(info, 4, "eps");
  if (!(eps >= 0 && std::isfinite(eps))) Bad(env, "eps must be a finite number >= 0");
  ExpectLength(env, "x", x.ElementLength(), Mul(env, T, d), "T * d");
  ExpectLength(env, "w", w.ElementLength(), d, "d");
  auto y = NewF32(env, T * d);
  dg::rmsnorm_forward(y.Data(), x.Data(), w.Data(), T, d, float(eps));
  return y;
}

// ropeTables(positions: Float64Array, invFreq) -> { cos, sin }, each [T][invFreq.length]
Napi::Value RopeTables(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto pos = TypedArg<Napi::Float64Array>(info, 0, napi_float64_array, "Float64Array", "positions");
  auto inv = F32Arg(info, 1, "invFreq");
  const int64_t T = int64_t(pos.ElementLength()), half = int64_t(inv.ElementLength());
  if (T == 0 || half == 0) Bad(env, "positions and invFreq must not be empty");
  auto c = NewF32(env, Mul(env, T, half));
  auto s = NewF32(env, T * half);
  dg::rope_tables(c.Data(), s.Data(), pos.Data(), T, inv.Data(), half);
  Napi::Object o = Napi::Object::New(env);
  o.Set("cos", c);
  o.Set("sin", s);
  return o;
}

// rope(x, cos, sin, T, nHeads, headDim) -> rotated copy of x
Napi::Value Rope(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto x = F32Arg(info, 0, "x");
  auto c = F32Arg(info, 1, "cos");
  auto s = F32Arg(info, 2, "sin");
  const int64_t T = IntArg(info, 3, "T", 1), heads = IntArg(info, 4, "nHeads", 1), hd = IntArg(info, 5, "headDim", 2);
  if (hd % 2 != 0) Bad(env, "headDim must be even");
  ExpectLength(env, "x", x.ElementLength(), Mul(env, Mul(env, T, heads), hd), "T * nHeads * headDim");
  ExpectLength(env, "cos", c.ElementLength(), T * hd / 2, "T * headDim / 2");
  ExpectLength(env, "sin", s.ElementLength(), T * hd / 2, "T * headDim / 2");
  auto y = NewF32(env, int64_t(x.ElementLength()));
  std::memcpy(y.Data(), x.Data(), x.ByteLength());
  dg::rope_forward(y.Data(), c.Data(), s.Data(), T, heads, hd);
  return y;
}

// attention(q, kCache, vCache, capacity, T, pos0, nHeads, nKvHeads, headDim) -> [T][nHeads * headDim]
// kCache and vCache are both Float32Array (an F32 cache) or both Uint16Array
// (a BF16 cache: the raw bf16 bits).
Napi::Value Attention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto q = F32Arg(info, 0, "q");
  const bool bf16 = info.Length() > 1 && info[1].IsTypedArray() &&
                    info[1].As<Napi::TypedArray>().TypedArrayType() == napi_uint16_array;
  const napi_typedarray_type kv_type = bf16 ? napi_uint16_array : napi_float32_array;
  const char* kv_name = bf16 ? "Uint16Array (as kCache)" : "Float32Array";
  auto k = TypedArg<Napi::TypedArray>(info, 1, kv_type, kv_name, "kCache");
  auto v = TypedArg<Napi::TypedArray>(info, 2, kv_type, kv_name, "vCache");
  const int64_t cap = IntArg(info, 3, "capacity", 1), T = IntArg(info, 4, "T", 1), pos0 = IntArg(info, 5, "pos0", 0);
  const int64_t heads = IntArg(info, 6, "nHeads", 1), kv = IntArg(info, 7, "nKvHeads", 1),
                hd = IntArg(info, 8, "headDim", 1);
  if (heads % kv != 0) Bad(env, "nHeads must be a multiple of nKvHeads");
  if (pos0 + T > cap) Bad(env, "pos0 + T must not exceed capacity");
  ExpectLength(env, "q", q.ElementLength(), Mul(env, Mul(env, T, heads), hd), "T * nHeads * headDim");
  ExpectLength(env, "kCache", k.ElementLength(), Mul(env, Mul(env, kv, cap), hd), "nKvHeads * capacity * headDim");
  ExpectLength(env, "vCache", v.ElementLength(), kv * cap * hd, "nKvHeads * capacity * headDim");
  const auto base = [](const Napi::TypedArray& a) {
    return static_cast<const char*>(a.ArrayBuffer().Data()) + a.ByteOffset();
  };
  auto out = NewF32(env, T * heads * hd);
  return Guarded(env, [&] {
    dg::attention_forward(out.Data(), q.Data(), base(k), base(v), cap, T, pos0, heads, kv, hd,
                          dg::ThreadPool::global(), bf16 ? dg::DType::BF16 : dg::DType::F32);
    return out;
  });
}

// swiglu(gate, up) -> new array
Napi::Value SwiGlu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto g = F32Arg(info, 0, "gate");
  auto u = F32Arg(info, 1, "up");
  ExpectLength(env, "up", u.ElementLength(), int64_t(g.ElementLength()), "gate.length");
  auto out = NewF32(env, int64_t(g.ElementLength()));
  dg::swiglu_forward(out.Data(), g.Data(), u.Data(), int64_t(g.ElementLength()));
  return out;
}

// addInplace(y, x) -> y, with y += x
Napi::Value AddInplace(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto y = F32Arg(info, 0, "y");
  auto x = F32Arg(info, 1, "x");
  ExpectLength(env, "x", x.ElementLength(), int64_t(y.ElementLength()), "y.length");
  dg::add_inplace(y.Data(), x.Data(), int64_t(y.ElementLength()));
  return y;
}

// embedding(ids: Int32Array, table: Uint8Array, dtype, rows, cols) -> [ids.length][cols]
Napi::Value Embedding(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto ids = TypedArg<Napi::Int32Array>(info, 0, napi_int32_array, "Int32Array", "ids");
  auto table = BytesArg(info, 1, "table");
  const dg::DType dtype = DTypeArg(info, 2);
  const int64_t rows = IntArg(info, 3, "rows", 1), cols = IntArg(info, 4, "cols", 1);
  ExpectLength(env, "table", table.ByteLength(), Mul(env, Mul(env, rows, cols), int64_t(dg::dtype_size(dtype))),
               "rows * cols * dtype size");
  const int64_t T = int64_t(ids.ElementLength());
  for (int64_t t = 0; t < T; ++t)
    if (ids[size_t(t)] < 0 || ids[size_t(t)] >= rows)
      Bad(env, "ids[" + std::to_string(t) + "] = " + std::to_string(ids[size_t(t)]) + " is outside [0, rows)");
  auto out = NewF32(env, Mul(env, T, cols));
  dg::embedding_forward(out.Data(), ids.Data(), T, dg::Matrix{table.Data(), dtype, rows, cols});
  return out;
}

// cpuInfo() -> { avx2, fma, f16c, avx512f, avx512bw, avx512vl, avx512dq, avx512bf16, best, active, threads }
Napi::Value CpuInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const dg::CpuFeatures& f = dg::cpu_features();
  Napi::Object o = Napi::Object::New(env);
  o.Set("avx2", f.avx2);
  o.Set("fma", f.fma);
  o.Set("f16c", f.f16c);
  o.Set("avx512f", f.avx512f);
  o.Set("avx512bw", f.avx512bw);
  o.Set("avx512vl", f.avx512vl);
  o.Set("avx512dq", f.avx512dq);
  o.Set("avx512bf16", f.avx512bf16);
  o.Set("best", dg::isa_name(dg::best_isa()));
  o.Set("active", dg::isa_name(dg::active_isa()));
  o.Set("threads", dg::ThreadPool::global().size());
  return o;
}

// setIsa("scalar" | "avx2" | "avx512"); throws ERR_ISA_UNSUPPORTED beyond the CPU's best.
Napi::Value SetIsa(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  dg::Isa isa;
  if (info.Length() < 1 || !info[0].IsString() || !dg::parse_isa(info[0].As<Napi::String>().Utf8Value().c_str(), &isa))
    Bad(env, "isa must be \"scalar\", \"avx2\" or \"avx512\"");
  Guarded(env, [&] { dg::set_active_isa(isa); });
  return env.Undefined();
}

}  // namespace

Napi::Object InitTestingOps(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("linear", Napi::Function::New(env, Linear, "linear"));
  o.Set("linearMany", Napi::Function::New(env, LinearMany, "linearMany"));
  o.Set("linearBackward", Napi::Function::New(env, LinearBackward, "linearBackward"));
  o.Set("rmsnorm", Napi::Function::New(env, RmsNorm, "rmsnorm"));
  o.Set("ropeTables", Napi::Function::New(env, RopeTables, "ropeTables"));
  o.Set("rope", Napi::Function::New(env, Rope, "rope"));
  o.Set("attention", Napi::Function::New(env, Attention, "attention"));
  o.Set("swiglu", Napi::Function::New(env, SwiGlu, "swiglu"));
  o.Set("addInplace", Napi::Function::New(env, AddInplace, "addInplace"));
  o.Set("embedding", Napi::Function::New(env, Embedding, "embedding"));
  o.Set("cpuInfo", Napi::Function::New(env, CpuInfo, "cpuInfo"));
  o.Set("setIsa", Napi::Function::New(env, SetIsa, "setIsa"));
  AddQuantTestingOps(env, o);
  return o;
}

}  // namespace dg_bind
