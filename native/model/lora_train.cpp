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

// m^T [cols][rows] of a row-major [rows][cols] f32 matrix (LoRA factors and
// rank-sized activations only: a few KiB to a few hundred, never a base weight).
static const float* transposed(std::vector<float>& buf, const float* b, int64_t out, int64_t r) {
  buf.resize(size_t(out * r));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t j = 0; j < r; ++j) buf[size_t(j * out + o)] = b[o * r + j];
  return buf.data();
}

// The rank-r products run on the engine's GEMMs in the shapes they are fast at:
// u = x A^T on the forward kernel (long reduction over in), y += u B^T and
// dx += du A on the input-gradient kernel (short reduction over r, wide outputs).
void lora_forward(float* y, const float* x, int64_t T, int64_t in, int64_t out, const TrainableLora& lora,
                  const LoraTrainFactors& f, int64_t layer, Projection p, ThreadPool& pool) {
  thread_local std::vector<float> xd_buf, mask, u, bt;
  const float* xd = dropped(xd_buf, mask, x, T * in, lora, layer, p);
  const int64_t r = lora.rank;
  u.resize(size_t(T * r));
  linear_forward(u.data(), xd, f32_matrix(f.a, r, in), nullptr, T, pool);
  for (float& v : u) v *= lora.scale;
  linear_backward(y, nullptr, nullptr, u.data(), nullptr, f32_matrix(transposed(bt, f.b, out, r), r, out), T, pool);
}

void lora_backward(float* dx, const float* dy, const float* x, int64_t T, int64_t in, int64_t out,
                   const TrainableLora& lora, const LoraTrainFactors& f, int64_t layer, Projection p, ThreadPool& pool) {
  thread_local std::vector<float> xd_buf, mask, u, du, dxd, bt, ut, gbt;
  const float* xd = dropped(xd_buf, mask, x, T * in, lora, layer, p);
  const int64_t r = lora.rank;
  u.resize(size_t(T * r));
  linear_forward(u.data(), xd, f32_matrix(f.a, r, in), nullptr, T, pool);
  for (float& v : u) v *= lora.scale;
  // gb += dy^T u, as gb^T [r][out] += u^T [r][T] . dy [T][out] on the input-gradient kernel
  // (dy read in place as the "weight"; only the rank-sized operands are transposed).
  if (f.gb) {
    gbt.assign(size_t(r * out), 0.f);
    linear_backward(gbt.data(), nullptr, nullptr, transposed(ut, u.data(), T, r), nullptr, f32_matrix(dy, T, out), r, pool);
    for (int64_t o = 0; o < out; ++o)
      for (int64_t j = 0; j < r; ++j) f.gb[o * r + j] += gbt[size_t(j * out + o)];
  }
  du.resize(size_t(T * r));
  linear_forward(du.data(), dy, f32_matrix(transposed(bt, f.b, out, r), r, out), nullptr, T, pool);  // du = dy B
  for (float& v : du) v *= lora.scale;
  const Matrix a = f32_matrix(f.a, r, in);
  // ga [r][in] += du^T [r][T] . drop(x) [T][in], the same way.
  if (f.ga) linear_backward(f.ga, nullptr, nullptr, transposed(ut, du.data(), T, r), nullptr, f32_matrix(xd, T, in), r, pool);
  if (lora.dropout <= 0.f) {
    linear_backward(dx, nullptr, nullptr, du.data(), nullptr, a, T, pool);  // dx += du A
    return;
  }
  dxd.assign(size_t(T * in), 0.f);
  linear_backward(dxd.data(), nullptr, nullptr, du.data(), nullptr, a, T, pool);
  for (int64_t i = 0; i < T * in; ++i) dx[i] += mask[size_t(i)] * dxd[size_t(i)];  // d drop(x)/dx = mask
}

}  // namespace dg
