// Non-owning views over weights (often memory-mapped) and errors with codes.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#include "core/dtype.h"

namespace dg {

// A row-major [rows][cols] matrix in its stored dtype; rows are contiguous.
// Linear weights follow the PyTorch convention [out_features][in_features].
// A block-quantized matrix stores cols / dtype_block_elems(dtype) blocks per
// row in groups of rows (quant/layout.h): use quant_row, not row_ptr, for it.
struct Matrix {
  const void* data = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;

  const char* row_ptr(int64_t r) const {
    return static_cast<const char*>(data) + r * dtype_row_bytes(dtype, cols);
  }
};

// Every error the core raises carries a stable code that JS sees as `err.code`.
class Error : public std::runtime_error {
 public:
  Error(std::string code, const std::string& message)
      : std::runtime_error(message), code_(std::move(code)) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

}  // namespace dg
