// linear_forward: argument checks, the thread split, and the ISA dispatch; the
// portable scalar kernel lives here too (the SIMD ones in matmul_avx*.cpp).
#include <algorithm>
#include <vector>

#include "core/cpu_features.h"
#include "kernels/cpu/matmul_impl.h"
#include "kernels/cpu/ops.h"

namespace dg {
namespace detail {

float* thread_scratch(int64_t n) {
  thread_local std::vector<float> buf;
  if (int64_t(buf.size()) < n) buf.resize(size_t(n));
  return buf.data();
}

// Widens one weight row at a time so every weight is read once, then takes its
// dot product with each token.
void linear_rows_scalar(const LinearJob& jb, int64_t r0, int64_t r1) {
  const int64_t K = jb.cols;
  float* wrow = thread_scratch(K);
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t k = 0; k < K; ++k) wrow[k] = load_as_f32(jb.w, jb.dtype, r * K + k);
    const float b = jb.bias ? jb.bias[r] : 0.f;
    for (int64_t t = 0; t < jb.T; ++t) {
      const float* x = jb.x + t * K;
      float s = 0.f;
      for (int64_t k = 0; k < K; ++k) s += wrow[k] * x[k];
      float& y = jb.y[t * jb.rows + r];
      y = jb.accumulate ? y + (s + b) : s + b;
    }
  }
}

}  // namespace detail

void linear_forward(float* y, const float* x, const Matrix& w, const float* bias, int64_t T, ThreadPool& pool,
                    bool accumulate) {
  if (T < 0 || w.rows < 0 || w.cols < 0) throw Error("ERR_ARGUMENT", "linear_forward: negative dimension");
  if (T == 0 || w.rows == 0) return;
  const detail::LinearJob job{y, x, w.data, w.dtype, w.rows, w.cols, bias, T, accumulate};
  void (*rows_fn)(const detail::LinearJob&, int64_t, int64_t) = detail::linear_rows_scalar;
#if defined(DG_X86)
  switch (active_isa()) {
    case Isa::Avx512: rows_fn = detail::linear_rows_avx512; break;
    case Isa::Avx2: rows_fn = detail::linear_rows_avx2; break;
    case Isa::Scalar: break;
  }
#endif
  // Threads split the output rows in groups of 4 (the SIMD tile height). Below
  // ~64k multiply-adds per thread, waking a worker costs more than it saves.
  const int64_t groups = (w.rows + 3) / 4;
  const int64_t macs_per_group = 4 * std::max<int64_t>(w.cols, 1) * T;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / macs_per_group);
  pool.parallel_for(
      groups, [&](int64_t g0, int64_t g1) { rows_fn(job, 4 * g0, std::min(4 * g1, w.rows)); }, grain);
}

}  // namespace dg
