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
};

// Computes output rows [r0, r1) for every token; r0 is a multiple of 4.
void linear_rows_scalar(const LinearJob& job, int64_t r0, int64_t r1);
void linear_rows_avx2(const LinearJob& job, int64_t r0, int64_t r1);
void linear_rows_avx512(const LinearJob& job, int64_t r0, int64_t r1);

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
