// linear_forward: argument checks, the thread split, and the ISA dispatch; the
// portable scalar kernel lives here too (the SIMD ones in matmul_avx*.cpp).
#include <algorithm>
#include <cstring>
#include <vector>

#include "core/cpu_features.h"
#include "kernels/cpu/matmul_impl.h"
#include "kernels/ops.h"

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

void linear_forward_many(const LinearOutput* outs, int n_outs, const float* x, int64_t T, ThreadPool& pool) {
  if (T < 0) throw Error("ERR_ARGUMENT", "linear_forward: negative token count");
  if (T == 0 || n_outs <= 0) return;
  const int64_t cols = outs[0].w.cols;
  void (*rows_fn)(const detail::LinearJob&, int64_t, int64_t) = detail::linear_rows_scalar;
#if defined(DG_X86)
  switch (active_isa()) {
    case Isa::Avx512: rows_fn = detail::linear_rows_avx512; break;
    case Isa::Avx2: rows_fn = detail::linear_rows_avx2; break;
    case Isa::Scalar: break;
  }
#endif
  // Threads split the output rows of all matrices in groups of 4 (the SIMD tile
  // height); group g of the concatenation belongs to the output whose first
  // group is the largest first[i] <= g.
  std::vector<detail::LinearJob> jobs;
  std::vector<int64_t> first;
  int64_t groups = 0, bytes = 0;
  for (int i = 0; i < n_outs; ++i) {
    const LinearOutput& o = outs[i];
    if (o.w.rows < 0 || o.w.cols != cols) throw Error("ERR_ARGUMENT", "linear_forward_many: matrices must share their input width");
    if (o.w.rows == 0) continue;
    jobs.push_back({o.y, x, o.w.data, o.w.dtype, o.w.rows, o.w.cols, o.bias, T, o.accumulate});
    first.push_back(groups);
    groups += (o.w.rows + 3) / 4;
    bytes += o.w.rows * cols * int64_t(dtype_size(o.w.dtype));
  }
  if (groups == 0) return;
  // A chunk should be worth waking a thread for: ~64k multiply-adds when the
  // call is compute-bound (prefill), ~16 KiB of weights when it streams them
  // (decode), whichever comes first.
  const int64_t macs_per_group = 4 * std::max<int64_t>(cols, 1) * T;
  const int64_t bytes_per_group = std::max<int64_t>(1, bytes / groups);
  const int64_t grain = std::max<int64_t>(1, std::min((int64_t(1) << 16) / macs_per_group, (int64_t(1) << 14) / bytes_per_group));
  pool.parallel_for(groups, [&](int64_t g0, int64_t g1) {
    size_t j = size_t(std::upper_bound(first.begin(), first.end(), g0) - first.begin()) - 1;
    for (; j < jobs.size() && first[j] < g1; ++j) {
      const int64_t lo = std::max(g0, first[j]) - first[j];
      const int64_t hi = std::min(g1 - first[j], (jobs[j].rows + 3) / 4);
      rows_fn(jobs[j], 4 * lo, std::min(4 * hi, jobs[j].rows));
    }
  }, grain);
}

void linear_forward(float* y, const float* x, const Matrix& w, const float* bias, int64_t T, ThreadPool& pool,
                    bool accumulate) {
  if (w.rows < 0 || w.cols < 0) throw Error("ERR_ARGUMENT", "linear_forward: negative dimension");
  const LinearOutput out{y, w, bias, accumulate};
  linear_forward_many(&out, 1, x, T, pool);
}

}  // namespace dg

// ---- linear_backward -------------------------------------------------------
namespace dg {
namespace {

// dst[c][r] = src[r][c] for a [rows][cols] matrix of elem-byte elements, in
// 32x32 tiles so both sides stay in cache.
void transpose_bytes(void* dst, const void* src, int64_t rows, int64_t cols, size_t elem, ThreadPool& pool) {
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  const int64_t tiles = (rows + 31) / 32;
  pool.parallel_for(tiles, [&](int64_t b0, int64_t b1) {
    for (int64_t rb = b0 * 32; rb < std::min(rows, b1 * 32); rb += 32)
      for (int64_t cb = 0; cb < cols; cb += 32)
        for (int64_t r = rb; r < std::min(rows, rb + 32); ++r)
          for (int64_t c = cb; c < std::min(cols, cb + 32); ++c)
            std::memcpy(d + (c * rows + r) * int64_t(elem), s + (r * cols + c) * int64_t(elem), elem);
  }, std::max<int64_t>(1, 4096 / std::max<int64_t>(cols, 1)));
}

// Few tokens: dx[t] += sum_o dy[t][o] w[o] as axpys over weight rows, each
// weight read once (a GEMV with the transposed matrix, memory-bound). Threads
// split the input columns so no two write the same dx element.
void linear_dx_small(float* dx, const float* dy, const Matrix& w, int64_t T, ThreadPool& pool) {
  const int64_t out = w.rows, in = w.cols;
  const int64_t grain = std::max<int64_t>(64, (int64_t(1) << 14) / std::max<int64_t>(out, 1));
  pool.parallel_for((in + 15) / 16, [&](int64_t c0, int64_t c1) {
    const int64_t i0 = c0 * 16, i1 = std::min(in, c1 * 16), n = i1 - i0;
    float* wrow = detail::thread_scratch(n);
    for (int64_t o = 0; o < out; ++o) {
      const float* src;
      if (w.dtype == DType::F32) {
        src = reinterpret_cast<const float*>(w.row_ptr(o)) + i0;
      } else {
        for (int64_t i = 0; i < n; ++i) wrow[i] = load_as_f32(w.data, w.dtype, o * in + i0 + i);
        src = wrow;
      }
      for (int64_t t = 0; t < T; ++t) {
        const float g = dy[t * out + o];
        if (g == 0.f) continue;
        float* d = dx + t * in + i0;
        for (int64_t i = 0; i < n; ++i) d[i] += g * src[i];
      }
    }
  }, std::max<int64_t>(1, grain / 16));
}

}  // namespace

void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const Matrix& w, int64_t T,
                     ThreadPool& pool) {
  const int64_t out = w.rows, in = w.cols;
  if (T < 0 || out < 0 || in < 0) throw Error("ERR_ARGUMENT", "linear_backward: negative dimension");
  if (T == 0 || out == 0 || in == 0) return;
  if (db) {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < out; ++o) db[o] += dy[t * out + o];
  }
  if (dx) {
    if (T <= 4) {
      linear_dx_small(dx, dy, w, T, pool);
    } else {
      // dx[T][in] += dy[T][out] . (W^T)[in][out]^T: the forward GEMM on W^T.
      std::vector<char> wt(size_t(out * in) * dtype_size(w.dtype));
      transpose_bytes(wt.data(), w.data, out, in, dtype_size(w.dtype), pool);
      linear_forward(dx, dy, Matrix{wt.data(), w.dtype, in, out}, nullptr, T, pool, true);
    }
  }
  if (dw) {
    // dw[out][in] += (dy^T)[out][T] . (x^T)[in][T]^T: the forward GEMM with the
    // token axis as the reduction.
    std::vector<float> dyt(size_t(out * T)), xt(size_t(in * T));
    transpose_bytes(dyt.data(), dy, T, out, 4, pool);
    transpose_bytes(xt.data(), x, T, in, 4, pool);
    linear_forward(dw, dyt.data(), Matrix{xt.data(), DType::F32, in, T}, nullptr, out, pool, true);
  }
}

}  // namespace dg
