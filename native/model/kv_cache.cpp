#include "model/kv_cache.h"

#include <algorithm>
#include <cstring>

namespace dg {

void KvCache::reserve(int64_t n) {
  if (n <= capacity_) return;
  const int64_t cap = std::max<int64_t>({n, 2 * capacity_, 64});
  auto grow = [&](std::vector<float>& old) {
    std::vector<float> fresh(size_t(n_kv_ * cap * hd_));
    for (int64_t h = 0; h < n_kv_ && length_ > 0; ++h)
      std::memcpy(&fresh[size_t(h * cap * hd_)], &old[size_t(h * capacity_ * hd_)],
                  size_t(length_ * hd_) * sizeof(float));
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
  float* K = keys(layer);
  float* V = values(layer);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < n_kv_; ++h) {
      const size_t dst = size_t((h * capacity_ + pos0 + t) * hd_);
      const size_t src = size_t((t * n_kv_ + h) * hd_);
      std::memcpy(K + dst, k_rows + src, size_t(hd_) * sizeof(float));
      std::memcpy(V + dst, v_rows + src, size_t(hd_) * sizeof(float));
    }
}

}  // namespace dg
