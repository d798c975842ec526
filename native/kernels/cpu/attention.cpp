// Causal grouped-query attention over the KV cache, one (query row, head) pair
// at a time: scores = q.k / sqrt(hd), softmax with max subtraction, out = p.V.
// The portable row kernel is here; attention_avx*.cpp vectorize the same math.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/cpu_features.h"
#include "kernels/cpu/attention_backward_impl.h"
#include "kernels/cpu/attention_impl.h"
#include "kernels/ops.h"

namespace dg {
namespace {

// Dot product with 8 partial sums so the compiler vectorizes it.
float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  for (; i < n; ++i) acc[0] += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// out[hd] = softmax(scale * q.K[0..n_ctx)) . V[0..n_ctx), using `scores` (n_ctx floats).
void attend_one(const detail::AttentionRows& a) {
  float* out = a.out;
  const float *q = a.q, *k = a.k, *v = a.v;
  const int64_t n_ctx = a.n_ctx0, hd = a.hd;
  const float scale = a.scale;
  float* scores = a.scores;
  float max_s = -INFINITY;
  for (int64_t j = 0; j < n_ctx; ++j) {
    scores[j] = dot(q, k + j * hd, hd) * scale;
    max_s = scores[j] > max_s ? scores[j] : max_s;
  }
  float sum = 0.f;
  for (int64_t j = 0; j < n_ctx; ++j) {
    scores[j] = std::exp(scores[j] - max_s);
    sum += scores[j];
  }
  for (int64_t i = 0; i < hd; ++i) out[i] = 0.f;
  for (int64_t j = 0; j < n_ctx; ++j) {
    const float p = scores[j];
    const float* vj = v + j * hd;
    for (int64_t i = 0; i < hd; ++i) out[i] += p * vj[i];
  }
  const float inv = 1.f / sum;
  for (int64_t i = 0; i < hd; ++i) out[i] *= inv;
}

// The widest row kernel whose vector width divides head_dim.
void (*row_kernel(int64_t hd))(const detail::AttentionRows&) {
#if defined(DG_X86)
  const Isa isa = active_isa();
  if (isa == Isa::Avx512 && hd % 16 == 0) return detail::attend_row_avx512;
  if (isa != Isa::Scalar && hd % 8 == 0) return detail::attend_row_avx2;
#endif
  (void)hd;
  return attend_one;
}

}  // namespace

namespace detail {
void attention_backward_head_scalar(const AttentionBackwardHead& a) { attention_backward_head(a); }
}  // namespace detail

void attention_forward(float* out, const float* q, const float* k_cache, const float* v_cache, int64_t capacity,
                       int64_t T, int64_t pos0, int64_t n_heads, int64_t n_kv_heads, int64_t hd, ThreadPool& pool) {
  const int64_t group = n_heads / n_kv_heads;
  const float scale = 1.f / std::sqrt(float(hd));
  const int64_t width = n_heads * hd;
  // Prefill on AVX-512 takes query rows four at a time (each K/V load shared).
  void (*attend)(const detail::AttentionRows&) = row_kernel(hd);
  void (*attend4)(const detail::AttentionRows&) = nullptr;
#if defined(DG_X86)
  if (T >= 4 && attend == detail::attend_row_avx512) attend4 = detail::attend_rows4_avx512;
#endif
  const int64_t rows_per_item = attend4 ? 4 : 1;
  const int64_t blocks = (T + rows_per_item - 1) / rows_per_item;
  // Work items are (row block, head) pairs. Block b costs ~pos0 + b, so items
  // are ordered b = 0, B-1, 1, B-2, ...: any contiguous chunk the pool hands a
  // thread then mixes cheap and expensive blocks and the threads finish together.
  // Early in a decode the items are tiny; keep ~32k multiply-adds per chunk.
  const int64_t grain = 32768 / (2 * hd * rows_per_item * (pos0 + T / 2 + 1) + 1) + 1;
  pool.parallel_for(blocks * n_heads, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scores;
    const size_t need = size_t(rows_per_item * (pos0 + T + 3));
    if (scores.size() < need) scores.resize(need);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t fold = item / n_heads, h = item % n_heads;
      const int64_t b = fold % 2 == 0 ? fold / 2 : blocks - 1 - fold / 2;
      const int64_t t0 = b * rows_per_item, rows = std::min(rows_per_item, T - t0);
      const int64_t kv = h / group;
      const float* k = k_cache + kv * capacity * hd;
      const float* v = v_cache + kv * capacity * hd;
      if (rows == 4 && attend4) {
        attend4({out + t0 * width + h * hd, q + t0 * width + h * hd, width, k, v, pos0 + t0 + 1, hd, scale, scores.data()});
        continue;
      }
      for (int64_t t = t0; t < t0 + rows; ++t)
        attend({out + t * width + h * hd, q + t * width + h * hd, width, k, v, pos0 + t + 1, hd, scale, scores.data()});
    }
  }, grain);
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, int64_t T, int64_t n_heads, int64_t n_kv_heads, int64_t hd, ThreadPool& pool) {
  void (*head)(const detail::AttentionBackwardHead&) = detail::attention_backward_head_scalar;
#if defined(DG_X86)
  switch (active_isa()) {
    case Isa::Avx512: head = detail::attention_backward_head_avx512; break;
    case Isa::Avx2: head = detail::attention_backward_head_avx2; break;
    case Isa::Scalar: break;
  }
#endif
  const int64_t group = n_heads / n_kv_heads;
  // One kv head per work item: its query heads are the only writers of its dk/dv.
  pool.parallel_for(n_kv_heads, [&](int64_t kv0, int64_t kv1) {
    std::vector<float> scratch(static_cast<size_t>(2 * T));
    for (int64_t kv = kv0; kv < kv1; ++kv)
      for (int64_t h = kv * group; h < (kv + 1) * group; ++h)
        head({dq + h * hd, dk + kv * T * hd, dv + kv * T * hd, dout + h * hd, q + h * hd, k + kv * T * hd, v + kv * T * hd,
              T, n_heads * hd, hd, 1.f / std::sqrt(float(hd)), scratch.data()});
  });
}

}  // namespace dg
