#include "model/lora_train.h"

#include <vector>

#include "kernels/ops.h"

namespace dg {
namespace {

uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// mask[i] = 0 (dropped) or 1/(1-p) (kept), from the (seed, layer, projection) stream.
void dropout_mask(std::vector<float>& mask, int64_t n, const TrainableLora& lora, int64_t layer, Projection p) {
  mask.resize(size_t(n));
  const uint64_t stream = splitmix64(lora.seed ^ splitmix64(uint64_t(layer) * kNumProjections + uint64_t(p)));
  const double p_drop = lora.dropout;
  const float keep = 1.f / (1.f - lora.dropout);
  for (int64_t i = 0; i < n; ++i) {
    const double u = double(splitmix64(stream + uint64_t(i)) >> 11) * 0x1.0p-53;
    mask[size_t(i)] = u < p_drop ? 0.f : keep;
  }
}

// x with dropout applied, or x itself when p == 0.
const float* dropped(std::vector<float>& buf, std::vector<float>& mask, const float* x, int64_t n,
                     const TrainableLora& lora, int64_t layer, Projection p) {
  if (lora.dropout <= 0.f) return x;
  dropout_mask(mask, n, lora, layer, p);
  buf.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) buf[size_t(i)] = x[i] * mask[size_t(i)];
  return buf.data();
}

Matrix f32_matrix(const float* data, int64_t rows, int64_t cols) { return Matrix{data, DType::F32, rows, cols}; }

}  // namespace

void lora_forward(float* y, const float* x, int64_t T, int64_t in, int64_t out, const TrainableLora& lora,
                  const LoraTrainFactors& f, int64_t layer, Projection p, ThreadPool& pool) {
  thread_local std::vector<float> xd_buf, mask, u;
  const float* xd = dropped(xd_buf, mask, x, T * in, lora, layer, p);
  u.resize(size_t(T * lora.rank));
  linear_forward(u.data(), xd, f32_matrix(f.a, lora.rank, in), nullptr, T, pool);
  for (float& v : u) v *= lora.scale;
  linear_forward(y, u.data(), f32_matrix(f.b, out, lora.rank), nullptr, T, pool, /*accumulate=*/true);
}

void lora_backward(float* dx, const float* dy, const float* x, int64_t T, int64_t in, int64_t out,
                   const TrainableLora& lora, const LoraTrainFactors& f, int64_t layer, Projection p, ThreadPool& pool) {
  thread_local std::vector<float> xd_buf, mask, u, du, dxd;
  const float* xd = dropped(xd_buf, mask, x, T * in, lora, layer, p);
  const int64_t r = lora.rank;
  u.resize(size_t(T * r));
  linear_forward(u.data(), xd, f32_matrix(f.a, r, in), nullptr, T, pool);
  for (float& v : u) v *= lora.scale;
  du.assign(size_t(T * r), 0.f);
  linear_backward(du.data(), f.gb, nullptr, dy, u.data(), f32_matrix(f.b, out, r), T, pool);  // du = dy B
  for (float& v : du) v *= lora.scale;
  if (lora.dropout <= 0.f) {
    linear_backward(dx, f.ga, nullptr, du.data(), xd, f32_matrix(f.a, r, in), T, pool);
    return;
  }
  dxd.assign(size_t(T * in), 0.f);
  linear_backward(dxd.data(), f.ga, nullptr, du.data(), xd, f32_matrix(f.a, r, in), T, pool);
  for (int64_t i = 0; i < T * in; ++i) dx[i] += mask[size_t(i)] * dxd[size_t(i)];  // d drop(x)/dx = mask
}

}  // namespace dg
