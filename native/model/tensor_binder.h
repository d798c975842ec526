// Looks up named tensors of memory-mapped safetensors files and checks each one
// (present, readable dtype, exact shape, byte length, inside its file) before
// handing out a view. Shared by checkpoint weights and LoRA adapters.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/tensor.h"
#include "io/mapped_file.h"

namespace dg {

// One entry of a safetensors header, as validated by lib/io/safetensors.ts.
struct TensorRef {
  std::string name;
  int32_t file = 0;         // index into the file list
  DType dtype = DType::F32;
  std::string unsupported_dtype;  // non-empty: a dtype the kernels cannot read (e.g. "I64")
  std::vector<int64_t> shape;
  uint64_t offset = 0;      // absolute byte offset in the file
  uint64_t length = 0;      // byte length
};

// Mapped files plus copies of tensors that were not naturally aligned; views
// handed out by a TensorBinder point into this storage.
struct TensorStorage {
  std::vector<std::shared_ptr<MappedFile>> files;
  std::vector<std::unique_ptr<uint8_t[]>> realigned;
  uint64_t elements = 0;  // elements of every tensor bound so far
};

class TensorBinder {
 public:
  TensorBinder(const std::vector<std::string>& paths, const std::vector<TensorRef>& tensors, TensorStorage& out,
               MappedFile::Mode mode = MappedFile::Mode::Map);

  bool has(const std::string& name) const {
    used_.insert(name);
    return by_name_.count(name) != 0;
  }
  // A [rows][cols] matrix in its stored dtype.
  Matrix matrix(const std::string& name, int64_t rows, int64_t cols);
  // A 1-D tensor widened to f32.
  std::vector<float> vector(const std::string& name, int64_t n);
  // Names of the tensors never bound (nor looked up by has()), sorted: a
  // checkpoint or adapter whose config does not use every tensor is an error
  // (e.g. num_hidden_layers lower than the checkpoint's layer count).
  std::vector<std::string> unused() const;

 private:
  const TensorRef& find(const std::string& name, const std::vector<int64_t>& shape) const;
  const void* bytes(const TensorRef& t, size_t align);

  TensorStorage& out_;
  std::unordered_map<std::string, const TensorRef*> by_name_;
  mutable std::unordered_set<std::string> used_;
};

// "a, b, c and 4 more" for an error message.
std::string name_list(const std::vector<std::string>& names, size_t shown = 4);

}  // namespace dg
