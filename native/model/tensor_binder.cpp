#include "model/tensor_binder.h"

#include <algorithm>
#include <cstring>

namespace dg {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

TensorBinder::TensorBinder(const std::vector<std::string>& paths, const std::vector<TensorRef>& tensors,
                           TensorStorage& out, MappedFile::Mode mode)
    : out_(out) {
  for (const auto& p : paths) out_.files.push_back(MappedFile::open(p, mode));
  for (const auto& t : tensors) {
    if (t.file < 0 || size_t(t.file) >= out_.files.size())
      throw Error("ERR_SAFETENSORS", t.name + ": file index " + std::to_string(t.file) + " out of range");
    by_name_[t.name] = &t;
  }
}

Matrix TensorBinder::matrix(const std::string& name, int64_t rows, int64_t cols) {
  const TensorRef& t = find(name, {rows, cols});
  return Matrix{bytes(t, dtype_size(t.dtype)), t.dtype, rows, cols};
}

std::vector<float> TensorBinder::vector(const std::string& name, int64_t n) {
  const TensorRef& t = find(name, {n});
  const void* data = bytes(t, 1);  // load_as_f32 copies bytes, so any alignment is fine
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = load_as_f32(data, t.dtype, i);
  return v;
}

std::vector<std::string> TensorBinder::unused() const {
  std::vector<std::string> out;
  for (const auto& [name, ref] : by_name_)
    if (!used_.count(name)) out.push_back(name);
  std::sort(out.begin(), out.end());
  return out;
}

std::string name_list(const std::vector<std::string>& names, size_t shown) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < shown; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > shown) out += " and " + std::to_string(names.size() - shown) + " more";
  return out;
}

const TensorRef& TensorBinder::find(const std::string& name, const std::vector<int64_t>& shape) const {
  used_.insert(name);
  auto it = by_name_.find(name);
  if (it == by_name_.end()) throw Error("ERR_MISSING_TENSOR", "no tensor " + name);
  const TensorRef& t = *it->second;
  if (!t.unsupported_dtype.empty())
    throw Error("ERR_UNSUPPORTED_DTYPE", name + " has dtype " + t.unsupported_dtype + "; supported: F32, F16, BF16");
  if (t.shape != shape)
    throw Error("ERR_TENSOR_SHAPE", name + " has shape " + shape_str(t.shape) + ", expected " + shape_str(shape));
  // Overflow-checked: a header may claim dimensions whose product wraps around
  // to the byte length of a small tensor.
  uint64_t numel = 1, bytes = 0;
  bool overflow = false;
  for (int64_t d : shape) overflow = overflow || d < 0 || __builtin_mul_overflow(numel, uint64_t(d), &numel);
  overflow = overflow || __builtin_mul_overflow(numel, uint64_t(dtype_size(t.dtype)), &bytes);
  if (overflow)
    throw Error("ERR_TENSOR_SHAPE", name + ": shape " + shape_str(shape) + " has more elements than memory can hold");
  if (bytes != t.length)
    throw Error("ERR_SAFETENSORS", name + ": byte length " + std::to_string(t.length) + " does not match shape " +
                                       shape_str(shape) + " in " + dtype_name(t.dtype));
  return t;
}

// Kernels read elements with natural alignment; safetensors only guarantees
// whatever alignment the writer chose, so realign the rare odd tensor.
const void* TensorBinder::bytes(const TensorRef& t, size_t align) {
  const uint8_t* p = out_.files[size_t(t.file)]->slice(t.offset, t.length, t.name);
  out_.elements += t.length / dtype_size(t.dtype);
  if (reinterpret_cast<uintptr_t>(p) % align == 0) return p;
  std::unique_ptr<uint8_t[]> copy(new uint8_t[t.length]);
  std::memcpy(copy.get(), p, t.length);
  out_.realigned.push_back(std::move(copy));
  return out_.realigned.back().get();
}

}  // namespace dg
