// Where the blocks of a block-quantized matrix live: rows in groups of 16.
//
// A rows x cols matrix of format F (formats.h) has nb = cols / QK blocks per
// row. Its rows are stored in groups of kQuantGroupRows = 16 consecutive rows
// (the last group holds rows % 16 when that is not 0); group g starts where a
// plain row-major matrix of the same blocks would put row 16 g, so the matrix
// is exactly rows * nb * sizeof(block) bytes. Inside a group of n rows, block
// column b takes n * sizeof(block) bytes at offset b * n * sizeof(block):
//   the n rows' block headers (F's scales: Q8_0 and Q4_0 the f16 d, 2 bytes;
//   Q4_K d, dmin and scales[12], 16 bytes), row 0 first, then
//   the n rows' codes (Q8_0 q[32], Q4_0 qs[16], Q4_K qs[128]), row 0 first.
// A block's header followed by its codes is formats.h's block, byte for byte.
//
// Why: one decode step reads each weight once, and with a block column of 16
// rows side by side a kernel loads the 16 scales as one vector and the codes of
// two rows as one 64-byte vector (matmul_q_avx512vnni.cpp), instead of a
// 2-byte scale and a 32-byte vector per row and block; that halved the
// instructions per weight and lets the decode stream at the memory's speed.
//
// Everything here is in an unnamed namespace: the ISA-specific kernels include
// it, and each translation unit must keep its own copy (see matmul_impl.h).
#pragma once
#include <cstdint>
#include <cstring>

#include "core/dtype.h"

namespace dg {
namespace {

constexpr int64_t kQuantGroupRows = 16;

// Bytes of a block's header (its scales) and of the whole block.
inline int64_t qblock_header_bytes(DType t) { return t == DType::Q4_K ? 16 : 2; }
inline int64_t qblock_bytes(DType t) { return t == DType::Q8_0 ? 34 : t == DType::Q4_0 ? 18 : 144; }
inline int64_t qblock_elems(DType t) { return t == DType::Q4_K ? 256 : 32; }

// One row of a quantized matrix: block b's header is at hdr + b * stride and
// its codes at codes + b * stride.
struct QuantRow {
  const char* hdr;
  const char* codes;
  int64_t stride;
};

inline QuantRow quant_row(const void* data, DType t, int64_t rows, int64_t cols, int64_t r) {
  const int64_t g0 = r / kQuantGroupRows * kQuantGroupRows;
  const int64_t n = rows - g0 < kQuantGroupRows ? rows - g0 : kQuantGroupRows, j = r - g0;
  const int64_t bytes = qblock_bytes(t), hdr = qblock_header_bytes(t);
  const char* base = static_cast<const char*>(data) + g0 * (cols / qblock_elems(t)) * bytes;
  return {base + j * hdr, base + n * hdr + j * (bytes - hdr), n * bytes};
}

// Block b of a row as formats.h's contiguous block (header, then codes).
inline void read_block(const QuantRow& row, DType t, int64_t b, void* block) {
  const int64_t hdr = qblock_header_bytes(t);
  std::memcpy(block, row.hdr + b * row.stride, size_t(hdr));
  std::memcpy(static_cast<char*>(block) + hdr, row.codes + b * row.stride, size_t(qblock_bytes(t) - hdr));
}

// All nb blocks of a row, contiguous (as quantize_row / dequantize_row take them).
inline void gather_row(const QuantRow& row, DType t, int64_t nb, void* blocks) {
  for (int64_t b = 0; b < nb; ++b) read_block(row, t, b, static_cast<char*>(blocks) + b * qblock_bytes(t));
}

// The inverse: nb contiguous blocks into row r of the matrix at data.
inline void scatter_row(const void* blocks, DType t, void* data, int64_t rows, int64_t cols, int64_t r) {
  const QuantRow row = quant_row(data, t, rows, cols, r);
  const int64_t hdr = qblock_header_bytes(t), bytes = qblock_bytes(t);
  for (int64_t b = 0; b < cols / qblock_elems(t); ++b) {
    const char* src = static_cast<const char*>(blocks) + b * bytes;
    std::memcpy(const_cast<char*>(row.hdr + b * row.stride), src, size_t(hdr));
    std::memcpy(const_cast<char*>(row.codes + b * row.stride), src + hdr, size_t(bytes - hdr));
  }
}

}  // namespace
}  // namespace dg
