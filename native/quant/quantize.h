// Load-time quantization of a model's linear weights into one of the block
// formats of formats.h. What is quantized: every q/k/v/o/gate/up/down matrix and
// the LM head (for tied embeddings a quantized copy of the embedding; the
// embedding lookup keeps reading the stored table). Norms, biases and the
// embedding stay in their stored precision. A matrix whose input width is not
// a multiple of the format's block size falls back: Q4_K -> Q4_0 when the width
// is a multiple of 32, otherwise the matrix stays in its stored dtype.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/thread_pool.h"
#include "model/weights.h"

namespace dg {

// An owned, 2 MiB-aligned, huge-page-advised buffer (anonymous mapping).
class HugeBuffer {
 public:
  explicit HugeBuffer(uint64_t bytes);
  ~HugeBuffer();
  HugeBuffer(const HugeBuffer&) = delete;
  HugeBuffer& operator=(const HugeBuffer&) = delete;
  uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0, mapped_ = 0;
};

// The format a [rows][cols] matrix gets under the requested one (see above).
DType quant_format_for(DType requested, DType stored, int64_t cols);

// Quantizes src into dst (dtype_row_bytes(fmt, cols) * rows bytes) on the pool.
// progress(rows_done) is called from the calling thread between chunks.
void quantize_matrix(const Matrix& src, DType fmt, uint8_t* dst, ThreadPool& pool,
                     const std::function<void(int64_t)>& progress = {});

// Every matrix quantize_weights replaces, in a fixed order (layers' q, k, v, o,
// gate, up, down, then the LM head), with the format it gets.
struct QuantTarget {
  Matrix* matrix;
  DType format;
};
std::vector<QuantTarget> quant_targets(ModelWeights& w, DType fmt);

// Quantizes the targets in place (the matrices then point into one owned
// buffer, kept in w.owned). progress(done, total) counts weights; its last call
// always has done == total (0, 0 when nothing is quantized).
void quantize_weights(ModelWeights& w, DType fmt, ThreadPool& pool,
                      const std::function<void(uint64_t, uint64_t)>& progress = {});

}  // namespace dg
