// Internal to the linear kernels: the per-ISA entry points that matmul.cpp
// dispatches to. The ISA files are compiled with their own -m flags, so they
// must not instantiate or call anything with vague linkage (std:: templates,
// inline helpers from other headers): the linker could keep their AVX-512 copy
// for the whole program and crash CPUs without it. They use only intrinsics,
// plain arithmetic and the functions declared here.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace dg::detail {

// Activations quantized for the block-quantized kernels (matmul_q.cpp): per
// token row, blocks of 32 int8 values q with an f32 scale d and the int sum s
// of the block's q, so x[t][32 b + i] ~= d[t][b] * q[t][32 b + i].
struct QuantActs {
  const int8_t* q;   // [T][cols]
  const float* d;    // [T][cols / 32]
  const int32_t* s;  // [T][cols / 32]
  const float* ds;   // [T][cols / 32]: d * s, as f32
};

// One linear_forward call: y[T][rows] = x[T][cols] . W^T (+ bias) (+ y if accumulate).
struct LinearJob {
  float* y;
  const float* x;
  const void* w;
  DType dtype;
  int64_t rows, cols;
  const float* bias;
  int64_t T;
  bool accumulate;
  const QuantActs* qx = nullptr;  // set when dtype is block-quantized
  const unsigned short* xbf16 = nullptr;  // x in BF16: AMX on quantized weights (rows zero-padded to a multiple of 32), linear_rows_bf16_dot
  const unsigned* xpairs = nullptr;       // AMX, BF16 weights: x in BF16 pair tiles (activations_to_bf16_pairs)
};

// Computes output rows [r0, r1) for every token; r0 is a multiple of 4.
void linear_rows_scalar(const LinearJob& job, int64_t r0, int64_t r1);
void linear_rows_avx2(const LinearJob& job, int64_t r0, int64_t r1);
void linear_rows_avx512(const LinearJob& job, int64_t r0, int64_t r1);

// The same for block-quantized weights: matmul_q.cpp and
// matmul_q_avx2.cpp / matmul_q_avx512vnni.cpp. The SIMD ones take int8
// activations (jb.qx) below kQuantPrefillTokens tokens and f32 ones (jb.x, with
// the weights dequantized to f16 per row block) from there on; the scalar one
// always takes jb.qx.
constexpr int64_t kQuantPrefillTokens = 16;
void linear_rows_q_scalar(const LinearJob& job, int64_t r0, int64_t r1);
void linear_rows_q_avx2(const LinearJob& job, int64_t r0, int64_t r1);
void linear_rows_q_avx512vnni(const LinearJob& job, int64_t r0, int64_t r1);

// AMX (matmul_amx.cpp), for kAmxTokens+ tokens on block-quantized weights: whether the CPU and OS allow AMX-BF16 tiles
// (asks Linux for the tile state once), x rows [t0, t1) to BF16 (rows >= T
// zero), and the kernel (needs jb.xbf16).
constexpr int64_t kAmxTokens = 16;
// BF16 weights with BF16 activations use the tiles from this many tokens on.
constexpr int64_t kAmxBf16Tokens = 4;
bool amx_usable();
void activations_to_bf16(const float* x, int64_t T, int64_t K, int64_t t0, int64_t t1, unsigned short* out);
void linear_rows_amx(const LinearJob& job, int64_t r0, int64_t r1);
// BF16 weights (cols a multiple of 32), T >= kAmxBf16Tokens: x rows [t0, t1) of the padded
// ceil(T / 16) * 16 into pair tiles (16 K-pairs x 16 tokens per tile, token
// tile-major, then column block), and the kernel (needs jb.xpairs).
void activations_to_bf16_pairs(const float* x, int64_t T, int64_t K, int64_t t0, int64_t t1, unsigned* out);
void linear_rows_bf16_amx(const LinearJob& job, int64_t r0, int64_t r1);
// BF16 weights, 1 to kAmxBf16Tokens - 1 tokens, where AMX is active (so the CPU
// has AVX512-BF16): vdpbf16ps over x in BF16 (jb.xbf16, [T][cols], any cols).
void linear_rows_bf16_dot(const LinearJob& job, int64_t r0, int64_t r1);

// A per-thread f32 buffer of at least n floats (reused between calls), so ISA
// files need no std::vector of their own.
float* thread_scratch(int64_t n);

}  // namespace dg::detail

namespace dg::detail {

// One linear_backward input-gradient call: dx[T][cols] += dy[T][rows] . W[rows][cols].
struct LinearDxJob {
  float* dx;
  const float* dy;
  const void* w;
  DType dtype;
  int64_t rows, cols;
  int64_t T;
};

// Column strips of width linear_dx_strip_*() starting at s0 * width, up to s1 * width (clipped to cols).
int64_t linear_dx_strip_avx2();
int64_t linear_dx_strip_avx512();
void linear_dx_strips_avx2(const LinearDxJob& job, int64_t s0, int64_t s1);
void linear_dx_strips_avx512(const LinearDxJob& job, int64_t s0, int64_t s1);

}  // namespace dg::detail
