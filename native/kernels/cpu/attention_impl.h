// Internal to attention: the per-ISA row kernels attention.cpp dispatches to.
// Same linkage rule as matmul_impl.h: the ISA files use intrinsics only.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace dg::detail {

// Consecutive query rows of one head: out_r = softmax(scale * q_r . K[0..n_ctx0 + r))
// . V[0..n_ctx0 + r). q and out rows are ld floats apart; k, v point at the
// head's [position][hd] cache rows, elements of dtype kv (F32 or BF16, widened
// to f32 as they are loaded); scores holds rows * (n_ctx0 + rows - 1) floats.
struct AttentionRows {
  float* out;
  const float* q;
  int64_t ld;
  const char* k;
  const char* v;
  int64_t n_ctx0, hd;
  float scale;
  float* scores;
  DType kv;
};

// One row (attend_row_*) or four (attend_rows4_*).
void attend_row_avx2(const AttentionRows& a);      // needs hd % 8 == 0
void attend_row_avx512(const AttentionRows& a);    // needs hd % 16 == 0
void attend_rows4_avx512(const AttentionRows& a);  // needs hd % 16 == 0

}  // namespace dg::detail
