// Per-sequence key/value cache, laid out [layer][kv_head][position][head_dim]
// so that attention for one head streams one contiguous block. Elements are
// F32 or BF16 (round to nearest even on write; attention widens them on load),
// chosen per model at load time.
#pragma once
#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "model/config.h"

namespace dg {

class KvCache {
 public:
  explicit KvCache(const ModelConfig& cfg, DType dtype = DType::F32);

  DType dtype() const { return dtype_; }
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  // Grows storage (amortized doubling) so positions [0, n) fit; keeps contents.
  void reserve(int64_t n);
  void set_length(int64_t n) { length_ = n; }  // caller guarantees n <= capacity
  // Frees the storage now (length and capacity 0); reserve() grows it again.
  void release() {
    k_.clear();
    v_.clear();
    k_.shrink_to_fit();
    v_.shrink_to_fit();
    capacity_ = length_ = 0;
  }

  // A layer's [n_kv][capacity][hd] elements of dtype().
  const void* keys(int64_t layer) const { return k_[size_t(layer)].data(); }
  const void* values(int64_t layer) const { return v_[size_t(layer)].data(); }
  // Stores T rows of k/v ([T][n_kv * hd] f32, as projected) at positions pos0 .. pos0+T-1.
  void write(int64_t layer, const float* k_rows, const float* v_rows, int64_t pos0, int64_t T);

  uint64_t bytes() const { return uint64_t(capacity_) * n_layers_ * n_kv_ * hd_ * 2 * elem_; }

 private:
  // One element's storage: 4 bytes (F32) or 2 (BF16); float keeps F32 rows aligned.
  using Block = std::vector<float>;
  int64_t n_layers_, n_kv_, hd_;
  DType dtype_;
  int64_t elem_;  // bytes per element
  int64_t capacity_ = 0, length_ = 0;
  std::vector<Block> k_, v_;
};

}  // namespace dg
