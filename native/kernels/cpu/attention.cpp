// Causal grouped-query attention over the KV cache, one (query row, head) pair
// at a time: scores = q.k / sqrt(hd), softmax with max subtraction, out = p.V.
// The portable row kernel is here; attention_avx*.cpp vectorize the same math.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/cpu_features.h"
#include "kernels/cpu/attention_impl.h"
#include "kernels/ops.h"

namespace dg {
namespace {

// Element i of a cache block in dtype D, widened to f32 (BF16: the high half of an f32).
template <DType D>
float kv_at(const char* base, int64_t i) {
  if constexpr (D == DType::F32) {
    float f;
    std::memcpy(&f, base + 4 * i, 4);
    return f;
  } else {
    uint16_t h;
    std::memcpy(&h, base + 2 * i, 2);
    return bf16_to_f32(h);
  }
}

// q . k[0..n) with 8 partial sums so the compiler vectorizes it.
template <DType D>
float dot(const float* q, const char* k, int64_t n) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += q[i + j] * kv_at<D>(k, i + j);
  for (; i < n; ++i) acc[0] += q[i] * kv_at<D>(k, i);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// out[hd] = softmax(scale * q.K[0..n_ctx)) . V[0..n_ctx), using `scores` (n_ctx floats).
template <DType D>
void attend_one(const detail::AttentionRows& a) {
  float* out = a.out;
  const float* q = a.q;
  const int64_t n_ctx = a.n_ctx0, hd = a.hd;
  const float scale = a.scale;
  float* scores = a.scores;
  const int64_t row_bytes = dtype_row_bytes(D, hd);
  float max_s = -INFINITY;
  for (int64_t j = 0; j < n_ctx; ++j) {
    scores[j] = dot<D>(q, a.k + j * row_bytes, hd) * scale;
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
    for (int64_t i = 0; i < hd; ++i) out[i] += p * kv_at<D>(a.v, j * hd + i);
  }
  const float inv = 1.f / sum;
  for (int64_t i = 0; i < hd; ++i) out[i] *= inv;
}

void attend_one_any(const detail::AttentionRows& a) {
  a.kv == DType::BF16 ? attend_one<DType::BF16>(a) : attend_one<DType::F32>(a);
}

// The widest row kernel whose vector width divides head_dim.
void (*row_kernel(int64_t hd))(const detail::AttentionRows&) {
#if defined(DG_X86)
  const Isa isa = active_isa();
  if (isa == Isa::Avx512 && hd % 16 == 0) return detail::attend_row_avx512;
  if (isa != Isa::Scalar && hd % 8 == 0) return detail::attend_row_avx2;
#endif
  (void)hd;
  return attend_one_any;
}

}  // namespace

void attention_forward(float* out, const float* q, const void* k_cache, const void* v_cache, int64_t capacity,
                       int64_t T, int64_t pos0, int64_t n_heads, int64_t n_kv_heads, int64_t hd, ThreadPool& pool,
                       DType kv_dtype) {
  if (kv_dtype != DType::F32 && kv_dtype != DType::BF16)
    throw Error("ERR_ARGUMENT", std::string("attention reads an F32 or BF16 cache, not ") + dtype_name(kv_dtype));
  const int64_t head_bytes = dtype_row_bytes(kv_dtype, capacity * hd);
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
      const char* k = static_cast<const char*>(k_cache) + kv * head_bytes;
      const char* v = static_cast<const char*>(v_cache) + kv * head_bytes;
      if (rows == 4 && attend4) {
        attend4({out + t0 * width + h * hd, q + t0 * width + h * hd, width, k, v, pos0 + t0 + 1, hd, scale,
                 scores.data(), kv_dtype});
        continue;
      }
      for (int64_t t = t0; t < t0 + rows; ++t)
        attend({out + t * width + h * hd, q + t * width + h * hd, width, k, v, pos0 + t + 1, hd, scale, scores.data(),
                kv_dtype});
    }
  }, grain);
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, int64_t T, int64_t n_heads, int64_t n_kv_heads, int64_t hd, ThreadPool& pool) {
  const int64_t group = n_heads / n_kv_heads, ld = n_heads * hd;
  const float scale = 1.f / std::sqrt(float(hd));
  // Per head, five products on the input-gradient GEMM kernel (wide outputs, short
  // reductions: the shape it is fast at), with [T][T] probabilities in f32:
  //   S = Q K^T, P = softmax(scale S) (causal), dP = dO V^T, dS = P (dP - rowsum(P dP)) scale,
  //   dQ += dS K, dK^T += Q^T dS, dV^T += dO^T P.
  // One kv head per work item (the only writer of its dk/dv); the GEMMs run inline in it.
  pool.parallel_for(n_kv_heads, [&](int64_t kv0, int64_t kv1) {
    std::vector<float> P(static_cast<size_t>(T * T)), dP(static_cast<size_t>(T * T));
    std::vector<float> qh(static_cast<size_t>(T * hd)), gh(static_cast<size_t>(T * hd)), qt(static_cast<size_t>(hd * T)),
        gt(static_cast<size_t>(hd * T)), kt(static_cast<size_t>(hd * T)), vt(static_cast<size_t>(hd * T)),
        dqh(static_cast<size_t>(T * hd)), dkt(static_cast<size_t>(hd * T)), dvt(static_cast<size_t>(hd * T));
    const auto f32 = [](const float* data, int64_t rows, int64_t cols) { return Matrix{data, DType::F32, rows, cols}; };
    for (int64_t kv = kv0; kv < kv1; ++kv) {
      const float* K = k + kv * T * hd;
      const float* V = v + kv * T * hd;
      for (int64_t j = 0; j < T; ++j)
        for (int64_t i = 0; i < hd; ++i) {
          kt[size_t(i * T + j)] = K[j * hd + i];
          vt[size_t(i * T + j)] = V[j * hd + i];
        }
      std::fill(dkt.begin(), dkt.end(), 0.f);
      std::fill(dvt.begin(), dvt.end(), 0.f);
      for (int64_t h = kv * group; h < (kv + 1) * group; ++h) {
        for (int64_t t = 0; t < T; ++t)
          for (int64_t i = 0; i < hd; ++i) {
            const float a = q[t * ld + h * hd + i], g = dout[t * ld + h * hd + i];
            qh[size_t(t * hd + i)] = a;
            gh[size_t(t * hd + i)] = g;
            qt[size_t(i * T + t)] = a;
            gt[size_t(i * T + t)] = g;
          }
        std::fill(P.begin(), P.end(), 0.f);
        std::fill(dP.begin(), dP.end(), 0.f);
        linear_backward(P.data(), nullptr, nullptr, qh.data(), nullptr, f32(kt.data(), hd, T), T, pool);   // S = Q K^T
        linear_backward(dP.data(), nullptr, nullptr, gh.data(), nullptr, f32(vt.data(), hd, T), T, pool);  // dP = dO V^T
        for (int64_t t = 0; t < T; ++t) {
          float* p = P.data() + t * T;
          float* d = dP.data() + t * T;
          float mx = -INFINITY;
          for (int64_t j = 0; j <= t; ++j) mx = std::max(mx, p[j] * scale);
          float sum = 0.f;
          for (int64_t j = 0; j <= t; ++j) sum += (p[j] = std::exp(p[j] * scale - mx));
          const float inv = 1.f / sum;
          float D = 0.f;
          for (int64_t j = 0; j <= t; ++j) D += (p[j] *= inv) * d[j];
          for (int64_t j = 0; j <= t; ++j) d[j] = p[j] * (d[j] - D) * scale;
          for (int64_t j = t + 1; j < T; ++j) p[j] = d[j] = 0.f;  // causal mask
        }
        std::fill(dqh.begin(), dqh.end(), 0.f);
        linear_backward(dqh.data(), nullptr, nullptr, dP.data(), nullptr, f32(K, T, hd), T, pool);        // dQ = dS K
        linear_backward(dkt.data(), nullptr, nullptr, qt.data(), nullptr, f32(dP.data(), T, T), hd, pool);  // dK^T += Q^T dS
        linear_backward(dvt.data(), nullptr, nullptr, gt.data(), nullptr, f32(P.data(), T, T), hd, pool);   // dV^T += dO^T P
        for (int64_t t = 0; t < T; ++t)
          for (int64_t i = 0; i < hd; ++i) dq[t * ld + h * hd + i] += dqh[size_t(t * hd + i)];
      }
      for (int64_t j = 0; j < T; ++j)
        for (int64_t i = 0; i < hd; ++i) {
          dk[kv * T * hd + j * hd + i] += dkt[size_t(i * T + j)];
          dv[kv * T * hd + j * hd + i] += dvt[size_t(i * T + j)];
        }
    }
  });
}

}  // namespace dg
