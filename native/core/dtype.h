// Element types of stored weights. Activations are always f32; BF16/F16 weights
// stay in their stored dtype and are widened inside the kernels. Q8_0, Q4_0 and
// Q4_K are block-quantized weights made at load time (native/quant/formats.h
// documents each block's layout); a row of such a matrix is cols / block_elems
// whole blocks, so those have no per-element size.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace dg {

enum class DType : int { F32 = 0, F16 = 1, BF16 = 2, Q8_0 = 3, Q4_0 = 4, Q4_K = 5 };

inline bool dtype_is_quantized(DType t) { return int(t) >= int(DType::Q8_0); }
// Bytes per element of the float dtypes (F32/F16/BF16 only).
inline size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }
// Elements and bytes per block: 1 element for the float dtypes.
inline int64_t dtype_block_elems(DType t) {
  return t == DType::Q4_K ? 256 : dtype_is_quantized(t) ? 32 : 1;
}
inline int64_t dtype_block_bytes(DType t) {
  switch (t) {
    case DType::Q8_0: return 34;
    case DType::Q4_0: return 18;
    case DType::Q4_K: return 144;
    default: return int64_t(dtype_size(t));
  }
}
// Bytes of one row of `cols` elements (cols a multiple of dtype_block_elems).
inline int64_t dtype_row_bytes(DType t, int64_t cols) { return cols / dtype_block_elems(t) * dtype_block_bytes(t); }
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::Q8_0: return "Q8_0";
    case DType::Q4_0: return "Q4_0";
    case DType::Q4_K: return "Q4_K";
  }
  return "?";
}

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even, NaN stays NaN (as torch does).
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}

// IEEE half -> float, portable (no F16C needed); handles subnormals, inf, NaN.
inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: renormalize
      int e = -1;
      do { man <<= 1; ++e; } while ((man & 0x400u) == 0);
      bits = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | man << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// float -> IEEE half, round to nearest even; overflow to inf, NaN stays NaN.
inline uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t exp = (x >> 23) & 0xffu;
  uint32_t man = x & 0x7fffffu;
  if (exp == 0xff) return uint16_t(sign | 0x7c00u | (man ? 0x200u : 0u));
  const int e = int(exp) - 127 + 15;
  if (e >= 31) return uint16_t(sign | 0x7c00u);
  int shift = 13;
  uint32_t h;
  if (e <= 0) {
    if (e < -10) return uint16_t(sign);
    man |= 0x800000u;
    shift = 14 - e;
    h = man >> shift;
  } else {
    h = uint32_t(e) << 10 | man >> 13;
  }
  const uint32_t rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
  if (rem > half || (rem == half && (h & 1u))) h += 1;  // a carry into the exponent is still right
  return uint16_t(sign | h);
}

// Reads element i of a buffer of float dtype t (F32/F16/BF16) as f32.
inline float load_as_f32(const void* data, DType t, int64_t i) {
  switch (t) {
    case DType::F32: { float f; std::memcpy(&f, static_cast<const char*>(data) + 4 * i, 4); return f; }
    case DType::F16: { uint16_t h; std::memcpy(&h, static_cast<const char*>(data) + 2 * i, 2); return f16_to_f32(h); }
    case DType::BF16: { uint16_t h; std::memcpy(&h, static_cast<const char*>(data) + 2 * i, 2); return bf16_to_f32(h); }
    default: break;  // block-quantized: see quant/formats.h dequantize_row
  }
  return 0.f;
}

}  // namespace dg
