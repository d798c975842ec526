// Block-quantized weight formats, byte-compatible with GGUF's blocks of the same
// names. A row of `cols` weights is cols / QK blocks; every multi-byte field is
// little-endian; scales are IEEE half (f16). In a matrix the rows are stored in
// groups of 16, each block column's headers before its codes (quant/layout.h);
// quantize_row and dequantize_row take a row's blocks contiguous, as below
// (gather_row / scatter_row convert), which is also GGUF's row layout.
//
// Q8_0  (QK = 32, 34 bytes = 8.5 bits per weight)
//   { f16 d; int8 q[32]; }                      w[i] = d * q[i]
//   d = max|w| / 127, q = round(w / d) in [-127, 127].
//
// Q4_0  (QK = 32, 18 bytes = 4.5 bits per weight)
//   { f16 d; uint8 qs[16]; }                    w[i] = d * (n[i] - 8)
//   n[i] = qs[i] & 15 for i < 16, qs[i - 16] >> 4 for i >= 16 (n in [0, 15]).
//   d = m / -8 where m is the weight of largest magnitude (sign kept), so m
//   maps exactly to n = 0 and the other side reaches 7 * |d|.
//
// Q4_K  (QK = 256, 144 bytes = 4.5 bits per weight): 8 sub-blocks of 32
//   { f16 d; f16 dmin; uint8 scales[12]; uint8 qs[128]; }
//   w[32 j + i] = d * sc[j] * n - dmin * m[j],  n in [0, 15], sc, m in [0, 63]
//   6-bit sc[j], m[j] packed in scales[12]: for j < 4, sc = scales[j] & 63,
//   m = scales[j + 4] & 63; for j >= 4, sc = (scales[j + 4] & 15) | (scales[j - 4] >> 6) << 4,
//   m = (scales[j + 4] >> 4) | (scales[j] >> 6) << 4.
//   qs holds 4 chunks of 32 bytes: chunk c's low nibbles are sub-block 2c,
//   its high nibbles sub-block 2c + 1 (element i of each at byte 32 c + i).
//   Quantization: per sub-block min/max (min clamped to <= 0) gives a step and
//   an offset; d, dmin = largest of each / 63; sc, m = their 6-bit ratios; n
//   is then rounded against the 6-bit-rounded step and offset.
//
// Activations are quantized per row in blocks of 32 to int8 with an f32 scale
// (dx = max|x| / 127, as GGUF's Q8_0 but with an f32 scale) and the block sum
// of the int8 values, so the kernels take integer dot products of 32 weights
// with 32 activations and apply both scales once per block.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace dg {

struct BlockQ8_0 {
  uint16_t d;
  int8_t q[32];
};
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[16];
};
struct BlockQ4_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qs[128];
};
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block is 34 bytes");
static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block is 18 bytes");
static_assert(sizeof(BlockQ4_K) == 144, "Q4_K block is 144 bytes");

// Parses "q8_0" | "q4_0" | "q4_k" (any case) into a quantized dtype.
bool parse_quant_format(const char* name, DType* out);

// Quantizes n floats (n a multiple of dtype_block_elems(t)) into dst.
void quantize_row(DType t, const float* src, void* dst, int64_t n);
// Dequantizes n elements of a row of blocks into f32.
void dequantize_row(DType t, const void* src, float* dst, int64_t n);

// The 6-bit scale and min of Q4_K sub-block j (0..7).
inline void q4k_scale_min(const uint8_t* scales, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = scales[j] & 63;
    *m = scales[j + 4] & 63;
  } else {
    *sc = (scales[j + 4] & 15) | (scales[j - 4] >> 6) << 4;
    *m = (scales[j + 4] >> 4) | (scales[j] >> 6) << 4;
  }
}

}  // namespace dg
