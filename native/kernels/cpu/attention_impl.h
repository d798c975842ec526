// Internal to attention: the per-ISA row kernels attention.cpp dispatches to.
// Same linkage rule as matmul_impl.h: the ISA files use intrinsics only.
#pragma once
#include <cstdint>

namespace dg::detail {

// out[hd] = softmax(scale * q . K[0..n_ctx)) . V[0..n_ctx) for one query row and
// head; k, v point at the head's [n_ctx][hd] cache rows; scores has n_ctx floats.
struct AttentionRow {
  float* out;
  const float* q;
  const float* k;
  const float* v;
  int64_t n_ctx, hd;
  float scale;
  float* scores;
};

void attend_row_avx2(const AttentionRow& a);    // needs hd % 8 == 0
void attend_row_avx512(const AttentionRow& a);  // needs hd % 16 == 0

// Four consecutive query rows of one head: q and out rows are ld floats apart;
// row r attends to keys [0, n_ctx0 + r); scores has 4 * (n_ctx0 + 3) floats.
struct AttentionRows {
  float* out;
  const float* q;
  int64_t ld;
  const float* k;
  const float* v;
  int64_t n_ctx0, hd;
  float scale;
  float* scores;
};

void attend_rows4_avx512(const AttentionRows& a);  // needs hd % 16 == 0

}  // namespace dg::detail
