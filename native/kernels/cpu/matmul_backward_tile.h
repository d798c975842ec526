// The input-gradient GEMM of a frozen linear layer, dx[T][in] += dy[T][out] . W[out][in],
// written once over a vector type V (simd_avx2.h / simd_avx512.h) and instantiated by
// matmul_backward_avx2.cpp / matmul_backward_avx512.cpp under their own -m flags
// (same linkage rule as matmul_tile.h: anonymous namespace, intrinsics only).
//
// W is read in its stored dtype, never transposed or copied whole: a thread owns a
// strip of kNC vectors of input columns; for each block of kOB weight rows it widens
// W[block][strip] once into a small f32 buffer (zero-padded past the last column),
// then every tile of kTM tokens streams that buffer: per weight row, kNC vector loads,
// kTM broadcasts of dy[t][o] and kTM * kNC FMAs into register accumulators.
#pragma once
#include <immintrin.h>

#include "kernels/cpu/matmul_impl.h"

namespace dg::detail {
namespace {

template <class V>
struct DxShape {
  static constexpr int kNC = 4;                         // vectors of columns per strip
  static constexpr int kTM = V::kLanes == 16 ? 6 : 3;   // tokens per tile (24 / 12 accumulators)
  static constexpr int64_t kOB = 256;                   // weight rows widened per block (64 KiB at 16 lanes)
  static constexpr int64_t kStrip = kNC * V::kLanes;
};

// acc[t][c] over one block of nb weight rows; buf holds the block's strip as f32 [nb][kStrip].
template <class V, int TM>
void dx_tile(float* dx, int64_t ldx, int ncols, const float* dy, int64_t ldy, const float* buf, int64_t nb) {
  using vec = typename V::vec;
  constexpr int NC = DxShape<V>::kNC;
  constexpr int64_t S = DxShape<V>::kStrip;
  constexpr int kL = V::kLanes;
  vec acc[TM][NC];
  for (int t = 0; t < TM; ++t)
    for (int c = 0; c < NC; ++c) {
      const int n = ncols - c * kL;
      acc[t][c] = n >= kL ? V::loadf(dx + t * ldx + c * kL) : n > 0 ? V::loadf_part(dx + t * ldx + c * kL, n, 0.f) : V::zero();
    }
  for (int64_t o = 0; o < nb; ++o) {
    vec w[NC];
    for (int c = 0; c < NC; ++c) w[c] = V::loadf(buf + o * S + c * kL);
    for (int t = 0; t < TM; ++t) {
      const vec g = V::set1(dy[t * ldy + o]);
      for (int c = 0; c < NC; ++c) acc[t][c] = V::fmadd(w[c], g, acc[t][c]);
    }
  }
  for (int t = 0; t < TM; ++t)
    for (int c = 0; c < NC; ++c) {
      const int n = ncols - c * kL;
      if (n >= kL) V::store(dx + t * ldx + c * kL, acc[t][c]);
      else if (n > 0) V::store_part(dx + t * ldx + c * kL, acc[t][c], n);
    }
}

template <class V, int TM = DxShape<V>::kTM>
void dx_tile_tokens(int64_t tm, float* dx, int64_t ldx, int ncols, const float* dy, int64_t ldy, const float* buf,
                    int64_t nb) {
  if constexpr (TM > 1) {
    if (tm < TM) return dx_tile_tokens<V, TM - 1>(tm, dx, ldx, ncols, dy, ldy, buf, nb);
  }
  dx_tile<V, TM>(dx, ldx, ncols, dy, ldy, buf, nb);
}

template <class V, DType D>
void dx_strips(const LinearDxJob& jb, int64_t s0, int64_t s1) {
  using Sh = DxShape<V>;
  constexpr int kL = V::kLanes;
  const int64_t K = jb.cols, ldw = K * elem_size(D);
  const char* w = static_cast<const char*>(jb.w);
  float* buf = thread_scratch(Sh::kOB * Sh::kStrip);
  for (int64_t s = s0; s < s1; ++s) {
    const int64_t c0 = s * Sh::kStrip;
    const int ncols = int(K - c0 < Sh::kStrip ? K - c0 : Sh::kStrip);
    for (int64_t o0 = 0; o0 < jb.rows; o0 += Sh::kOB) {
      const int64_t nb = jb.rows - o0 < Sh::kOB ? jb.rows - o0 : Sh::kOB;
      for (int64_t o = 0; o < nb; ++o) {
        const char* row = w + (o0 + o) * ldw;
        for (int c = 0; c < Sh::kNC; ++c) {
          const int n = ncols - c * kL;
          const typename V::vec v = n >= kL ? V::template load<D>(row, c0 + c * kL)
                                    : n > 0 ? V::template load_part<D>(row, c0 + c * kL, n)
                                            : V::zero();
          V::store(buf + o * Sh::kStrip + c * kL, v);
        }
      }
      for (int64_t t0 = 0; t0 < jb.T; t0 += Sh::kTM) {
        const int64_t tm = jb.T - t0 < Sh::kTM ? jb.T - t0 : Sh::kTM;
        dx_tile_tokens<V>(tm, jb.dx + t0 * K + c0, K, ncols, jb.dy + t0 * jb.rows + o0, jb.rows, buf, nb);
      }
    }
  }
}

template <class V>
void linear_dx(const LinearDxJob& jb, int64_t s0, int64_t s1) {
  switch (jb.dtype) {
    case DType::F32: return dx_strips<V, DType::F32>(jb, s0, s1);
    case DType::BF16: return dx_strips<V, DType::BF16>(jb, s0, s1);
    case DType::F16: return dx_strips<V, DType::F16>(jb, s0, s1);
  }
}

}  // namespace
}  // namespace dg::detail
