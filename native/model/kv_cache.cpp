#include "model/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "core/tensor.h"

namespace dg {

KvCache::KvCache(const ModelConfig& cfg, DType dtype)
    : n_layers_(cfg.n_layers), n_kv_(cfg.n_kv_heads), hd_(cfg.head_dim), dtype_(dtype),
      elem_(dtype_row_bytes(dtype, 1)) {
  if (dtype != DType::F32 && dtype != DType::BF16)
    throw Error("ERR_ARGUMENT", std::string("a KV cache holds F32 or BF16, not ") + dtype_name(dtype));
}

void KvCache::reserve(int64_t n) {
  if (n <= capacity_) return;
  const int64_t cap = std::max<int64_t>({n, 2 * capacity_, 64});
  const int64_t row = hd_ * elem_;  // bytes of one position of one head
  auto grow = [&](Block& old) {
    Block fresh(size_t((n_kv_ * cap * row + 3) / 4));
    for (int64_t h = 0; h < n_kv_ && length_ > 0; ++h)
      std::memcpy(reinterpret_cast<char*>(fresh.data()) + h * cap * row,
                  reinterpret_cast<const char*>(old.data()) + h * capacity_ * row, size_t(length_ * row));
    old.swap(fresh);
  };
  k_.resize(size_t(n_layers_));
  v_.resize(size_t(n_layers_));
  for (int64_t l = 0; l < n_layers_; ++l) {
    grow(k_[size_t(l)]);
    grow(v_[size_t(l)]);
  }
  capacity_ = cap;
}

void KvCache::write(int64_t layer, const float* k_rows, const float* v_rows, int64_t pos0, int64_t T) {
  char* K = reinterpret_cast<char*>(k_[size_t(layer)].data());
  char* V = reinterpret_cast<char*>(v_[size_t(layer)].data());
  const int64_t row = hd_ * elem_;
  auto put = [&](char* dst, const float* src) {
    if (dtype_ == DType::F32) {
      std::memcpy(dst, src, size_t(row));
      return;
    }
    for (int64_t i = 0; i < hd_; ++i) {  // memcpy: the storage is declared float
      const uint16_t b = f32_to_bf16(src[i]);
      std::memcpy(dst + 2 * i, &b, 2);
    }
  };
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < n_kv_; ++h) {
      const int64_t dst = (h * capacity_ + pos0 + t) * row;
      const int64_t src = (t * n_kv_ + h) * hd_;
      put(K + dst, k_rows + src);
      put(V + dst, v_rows + src);
    }
}

}  // namespace dg
