// linear_forward: argument checks, the thread split, and the ISA dispatch; the
// portable scalar kernel lives here too (the SIMD ones in matmul_avx*.cpp).
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "kernels/cpu/matmul_impl.h"
#include "kernels/ops.h"
#include "quant/formats.h"

namespace dg {
namespace detail {

void quantize_acts_rows(const float* x, int64_t K, int64_t t0, int64_t t1, int8_t* q, float* d, int32_t* s, float* ds);

}  // namespace detail

namespace {

std::atomic<bool>& amx_allowed() {
  static std::atomic<bool> allowed{[] {
    const char* env = std::getenv("DEEPGUARD_AMX");
    return !(env && std::strcmp(env, "0") == 0);
  }()};
  return allowed;
}

}  // namespace

void set_amx_enabled(bool enabled) { amx_allowed().store(enabled); }

bool amx_active() {
#if defined(DG_X86)
  return amx_allowed().load() && active_isa() == Isa::Avx512 && detail::amx_usable();
#else
  return false;
#endif
}

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

void linear_forward_many(const LinearOutput* outs, int n_outs, const float* x, int64_t T, ThreadPool& pool,
                         bool bf16_activations) {
  if (T < 0) throw Error("ERR_ARGUMENT", "linear_forward: negative token count");
  if (T == 0 || n_outs <= 0) return;
  const int64_t cols = outs[0].w.cols;
  using RowsFn = void (*)(const detail::LinearJob&, int64_t, int64_t);
  RowsFn rows_fn = detail::linear_rows_scalar, rows_q_fn = detail::linear_rows_q_scalar;
#if defined(DG_X86)
  switch (active_isa()) {
    case Isa::Avx512:
      rows_fn = detail::linear_rows_avx512;
      rows_q_fn = cpu_features().avx512vnni ? detail::linear_rows_q_avx512vnni : detail::linear_rows_q_avx2;
      break;
    case Isa::Avx2:
      rows_fn = detail::linear_rows_avx2;
      rows_q_fn = detail::linear_rows_q_avx2;
      break;
    case Isa::Scalar: break;
  }
#endif
  // Threads split the output rows of all matrices in groups of kRows (16: a
  // quantized matrix's row group, quant/layout.h, and a multiple of every SIMD
  // tile's height); group g of the concatenation belongs to the output whose
  // first group is the largest first[i] <= g.
  constexpr int64_t kRows = 16;
#if defined(DG_X86)
  const bool amx_on = amx_active();
  const bool amx = T >= detail::kAmxTokens && amx_on;
  // One token streams its weights faster through the AVX-512 kernel (measured
  // ~8% at decode, 100M model); from a few rows on the tiles win.
  const bool bf16_amx = amx_on && T >= detail::kAmxBf16Tokens && cols % 32 == 0;
  // Fewer tokens: AVX512-BF16 dot products (every AMX CPU has them).
  const bool bf16_dot = amx_on && !bf16_amx && T < detail::kAmxBf16Tokens;
  if (amx) rows_q_fn = detail::linear_rows_amx;
#else
  const bool amx_on = false, amx = false, bf16_amx = false, bf16_dot = false;
#endif
  std::vector<detail::LinearJob> jobs;
  std::vector<RowsFn> fns;
  std::vector<int64_t> first;
  int64_t groups = 0, bytes = 0;
  bool quantized = false, any_bf16 = false;
  for (int i = 0; i < n_outs; ++i) {
    const LinearOutput& o = outs[i];
    if (o.w.rows < 0 || o.w.cols != cols) throw Error("ERR_ARGUMENT", "linear_forward_many: matrices must share their input width");
    if (o.w.rows == 0) continue;
    const bool q = dtype_is_quantized(o.w.dtype);
    if (q && cols % dtype_block_elems(o.w.dtype) != 0)
      throw Error("ERR_ARGUMENT", std::string("linear_forward: ") + std::to_string(cols) + " columns are not whole " +
                                      dtype_name(o.w.dtype) + " blocks of " + std::to_string(dtype_block_elems(o.w.dtype)));
    quantized = quantized || q;
    // BF16 activations: AMX tiles from kAmxBf16Tokens tokens on when the
    // width is whole 32-column blocks, AVX512-BF16 dot products for fewer
    // tokens, else x rounded to BF16 for the f32 kernels (bf16_round).
    const bool bf16 = bf16_activations && o.w.dtype == DType::BF16;
    const bool bf16_round = bf16 && !bf16_amx && !bf16_dot;
    any_bf16 = any_bf16 || bf16;
    jobs.push_back({o.y, bf16_round ? nullptr : x, o.w.data, o.w.dtype, o.w.rows, o.w.cols, o.bias, T, o.accumulate});
    fns.push_back(q ? rows_q_fn : !bf16 || bf16_round ? rows_fn : bf16_amx ? detail::linear_rows_bf16_amx : detail::linear_rows_bf16_dot);
    first.push_back(groups);
    groups += (o.w.rows + kRows - 1) / kRows;
    bytes += o.w.rows * dtype_row_bytes(o.w.dtype, cols);
  }
  if (groups == 0) return;
  // Block-quantized weights take int8 activations: quantize x once for all of them.
  thread_local std::vector<int8_t> xq;
  thread_local std::vector<float> xd, xds;
  thread_local std::vector<int32_t> xs;
  detail::QuantActs qx{};
  // BF16 activations for BF16 weights: pair tiles for AMX; BF16 rows for the
  // dot-product kernel; without either, x rounded to BF16 (and widened back)
  // for the f32 kernels, the same values.
  thread_local std::vector<unsigned> xp;
  thread_local std::vector<unsigned short> xh;
  thread_local std::vector<float> xr;
  if (any_bf16) {
    if (bf16_amx) {
      const int64_t Tp = (T + 15) / 16 * 16;
      xp.resize(size_t(Tp * cols / 2));
      unsigned* out = xp.data();  // a plain pointer: see below
      pool.parallel_for(Tp, [&](int64_t t0, int64_t t1) { detail::activations_to_bf16_pairs(x, T, cols, t0, t1, out); },
                        std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(cols, 1)));
      for (auto& jb : jobs) jb.xpairs = out;
    } else if (bf16_dot) {
      xh.resize(size_t(T * cols));
      detail::activations_to_bf16(x, T, cols, 0, T, xh.data());
      for (auto& jb : jobs) jb.xbf16 = xh.data();
    } else {
      xr.resize(size_t(T * cols));
      for (int64_t i = 0; i < T * cols; ++i) xr[size_t(i)] = bf16_to_f32(f32_to_bf16(x[i]));
      for (auto& jb : jobs)
        if (!jb.x) jb.x = xr.data();
    }
  }
  // The SIMD kernels take f32 activations from kQuantPrefillTokens tokens on;
  // AMX takes them in BF16.
  thread_local std::vector<unsigned short> xb;
  if (quantized && amx) {
    const int64_t Tp = (T + 31) / 32 * 32;
    xb.resize(size_t(Tp * cols));
    unsigned short* out = xb.data();  // a plain pointer: see below
    pool.parallel_for(Tp, [&](int64_t t0, int64_t t1) { detail::activations_to_bf16(x, T, cols, t0, t1, out); },
                      std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(cols, 1)));
    for (auto& jb : jobs) jb.xbf16 = out;
  } else if (quantized && (T < detail::kQuantPrefillTokens || rows_q_fn == detail::linear_rows_q_scalar)) {
    const int64_t nb = cols / 32;
    xq.resize(size_t(T * cols));
    xd.resize(size_t(T * nb));
    xs.resize(size_t(T * nb));
    xds.resize(size_t(T * nb));
    // Plain pointers: inside the lambda a thread_local name would be the worker's own.
    int8_t* q = xq.data();
    float *d = xd.data(), *ds = xds.data();
    int32_t* s = xs.data();
    pool.parallel_for(T, [&](int64_t t0, int64_t t1) {
      detail::quantize_acts_rows(x, cols, t0, t1, q, d, s, ds);
    }, std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(cols, 1)));
    qx = {q, d, s, ds};
    for (auto& jb : jobs) jb.qx = &qx;
  }
  // A chunk should be worth waking a thread for: ~64k multiply-adds when the
  // call is compute-bound (prefill), ~16 KiB of weights when it streams them
  // (decode), whichever comes first.
  const int64_t macs_per_group = kRows * std::max<int64_t>(cols, 1) * T;
  const int64_t bytes_per_group = std::max<int64_t>(1, bytes / groups);
  const int64_t grain = std::max<int64_t>(1, std::min((int64_t(1) << 16) / macs_per_group, (int64_t(1) << 14) / bytes_per_group));
  pool.parallel_for(groups, [&](int64_t g0, int64_t g1) {
    size_t j = size_t(std::upper_bound(first.begin(), first.end(), g0) - first.begin()) - 1;
    for (; j < jobs.size() && first[j] < g1; ++j) {
      const int64_t lo = std::max(g0, first[j]) - first[j];
      const int64_t hi = std::min(g1 - first[j], (jobs[j].rows + kRows - 1) / kRows);
      fns[j](jobs[j], kRows * lo, std::min(kRows * hi, jobs[j].rows));
    }
  }, grain);
}

// dx[t][:] += dy[t][o] * W[o][:] for columns of strips [s0, s1) (strip width 64).
static void linear_dx_strips_scalar(const detail::LinearDxJob& jb, int64_t s0, int64_t s1) {
  const int64_t K = jb.cols, c0 = s0 * 64, c1 = std::min(K, s1 * 64);
  for (int64_t o = 0; o < jb.rows; ++o) {
    for (int64_t t = 0; t < jb.T; ++t) {
      const float g = jb.dy[t * jb.rows + o];
      float* dx = jb.dx + t * K;
      for (int64_t c = c0; c < c1; ++c) dx[c] += g * load_as_f32(jb.w, jb.dtype, o * K + c);
    }
  }
}

void linear_forward(float* y, const float* x, const Matrix& w, const float* bias, int64_t T, ThreadPool& pool,
                    bool accumulate, bool bf16_activations) {
  if (w.rows < 0 || w.cols < 0) throw Error("ERR_ARGUMENT", "linear_forward: negative dimension");
  const LinearOutput out{y, w, bias, accumulate};
  linear_forward_many(&out, 1, x, T, pool, bf16_activations);
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
    // Column strips of dx, W widened block by block in place (never transposed or
    // copied whole): matmul_backward_tile.h.
    int64_t strip = 64;
    void (*fn)(const detail::LinearDxJob&, int64_t, int64_t) = linear_dx_strips_scalar;
#if defined(DG_X86)
    switch (active_isa()) {
      case Isa::Avx512: fn = detail::linear_dx_strips_avx512; strip = detail::linear_dx_strip_avx512(); break;
      case Isa::Avx2: fn = detail::linear_dx_strips_avx2; strip = detail::linear_dx_strip_avx2(); break;
      case Isa::Scalar: break;
    }
#endif
    const detail::LinearDxJob job{dx, dy, w.data, w.dtype, out, in, T};
    pool.parallel_for((in + strip - 1) / strip, [&](int64_t s0, int64_t s1) { fn(job, s0, s1); });
  }
  if (dw) {
    if (!x) throw Error("ERR_ARGUMENT", "linear_backward: the weight gradient needs the input x");
    // dw[out][in] += (dy^T)[out][T] . (x^T)[in][T]^T: the forward GEMM with the
    // token axis as the reduction.
    std::vector<float> dyt(size_t(out * T)), xt(size_t(in * T));
    transpose_bytes(dyt.data(), dy, T, out, 4, pool);
    transpose_bytes(xt.data(), x, T, in, 4, pool);
    linear_forward(dw, dyt.data(), Matrix{xt.data(), DType::F32, in, T}, nullptr, out, pool, true);
  }
}

}  // namespace dg
