// Residual add and token-embedding lookup.
#include <cstring>
#include <vector>

#include "kernels/ops.h"
#include "quant/formats.h"
#include "quant/layout.h"

namespace dg {

void add_inplace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void embedding_forward(float* out, const int32_t* ids, int64_t T, const Matrix& table) {
  const int64_t d = table.cols;
  std::vector<char> blocks;
  for (int64_t t = 0; t < T; ++t) {
    float* o = out + t * d;
    if (dtype_is_quantized(table.dtype)) {
      blocks.resize(size_t(dtype_row_bytes(table.dtype, d)));
      gather_row(quant_row(table.data, table.dtype, table.rows, d, ids[t]), table.dtype, d / dtype_block_elems(table.dtype),
                 blocks.data());
      dequantize_row(table.dtype, blocks.data(), o, d);
      continue;
    }
    const char* row = table.row_ptr(ids[t]);
    if (table.dtype == DType::F32) {
      std::memcpy(o, row, size_t(d) * 4);
      continue;
    }
    for (int64_t i = 0; i < d; ++i) o[i] = load_as_f32(row, table.dtype, i);
  }
}

void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t T, int64_t d) {
  for (int64_t t = 0; t < T; ++t) {
    float* row = dtable + int64_t(ids[t]) * d;
    const float* g = dout + t * d;
    for (int64_t i = 0; i < d; ++i) row[i] += g[i];
  }
}

}  // namespace dg
