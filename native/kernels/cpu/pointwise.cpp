// Pointwise ops of the security analyzer: ReLU, sigmoid and inverted dropout,
// each forward beside its backward.
#include <cmath>

#include "kernels/ops.h"

namespace dg {

void relu_forward(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0.f ? x[i] : 0.f;
}

void relu_backward(float* dx, const float* dy, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] += y[i] > 0.f ? dy[i] : 0.f;
}

void sigmoid_forward(float* y, const float* x, int64_t n) {
  // Both branches avoid exp overflow: exp of a non-positive number only.
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    if (v >= 0.f) {
      y[i] = 1.f / (1.f + std::exp(-v));
    } else {
      const float e = std::exp(v);
      y[i] = e / (1.f + e);
    }
  }
}

void sigmoid_backward(float* dx, const float* dy, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] += dy[i] * y[i] * (1.f - y[i]);
}

namespace {
uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
}  // namespace

void dropout_forward(float* y, uint8_t* mask, const float* x, int64_t n, float p, uint64_t seed, uint64_t stream,
                     uint64_t offset) {
  if (!(p >= 0.f && p < 1.f)) throw Error("ERR_ARGUMENT", "dropout: p must be in [0, 1)");
  const float scale = 1.f / (1.f - p);
  const uint64_t key = splitmix64(seed ^ splitmix64(stream + 0x5851f42d4c957f2dull));
  // keep iff u >= p with u = r / 2^64, i.e. r >= p * 2^64.
  const double threshold = double(p) * 18446744073709551616.0;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t r = splitmix64(key + uint64_t(offset + uint64_t(i)) * 0xd1b54a32d192ed03ull);
    const bool keep = double(r) >= threshold;
    mask[i] = keep ? 1 : 0;
    y[i] = keep ? x[i] * scale : 0.f;
  }
}

void dropout_backward(float* dx, const float* dy, const uint8_t* mask, int64_t n, float p) {
  const float scale = 1.f / (1.f - p);
  for (int64_t i = 0; i < n; ++i) dx[i] += mask[i] ? dy[i] * scale : 0.f;
}

}  // namespace dg
