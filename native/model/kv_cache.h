// Per-sequence key/value cache, f32, laid out [layer][kv_head][position][head_dim]
// so that attention for one head streams one contiguous block.
#pragma once
#include <cstdint>
#include <vector>

#include "model/config.h"

namespace dg {

class KvCache {
 public:
  explicit KvCache(const ModelConfig& cfg) : n_layers_(cfg.n_layers), n_kv_(cfg.n_kv_heads), hd_(cfg.head_dim) {}

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

  float* keys(int64_t layer) { return k_[size_t(layer)].data(); }
  float* values(int64_t layer) { return v_[size_t(layer)].data(); }
  // Stores T rows of k/v ([T][n_kv * hd], as projected) at positions pos0 .. pos0+T-1.
  void write(int64_t layer, const float* k_rows, const float* v_rows, int64_t pos0, int64_t T);

  uint64_t bytes() const { return uint64_t(capacity_) * n_layers_ * n_kv_ * hd_ * 2 * sizeof(float); }

 private:
  int64_t n_layers_, n_kv_, hd_;
  int64_t capacity_ = 0, length_ = 0;
  std::vector<std::vector<float>> k_, v_;
};

}  // namespace dg
