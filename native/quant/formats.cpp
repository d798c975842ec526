// Quantize / dequantize one row of each block format (layouts in formats.h).
#include "quant/formats.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <string>

#include "core/tensor.h"

namespace dg {
namespace {

int nearest_int(float f) { return int(std::lrintf(f)); }

void quantize_q8_0(const float* x, BlockQ8_0* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += 32) {
    float amax = 0.f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
    y[b].d = f32_to_f16(amax / 127.f);
    const float d = f16_to_f32(y[b].d);  // round against the stored scale
    const float id = d > 0.f ? 1.f / d : 0.f;
    for (int i = 0; i < 32; ++i) y[b].q[i] = int8_t(std::clamp(nearest_int(x[i] * id), -127, 127));
  }
}

void quantize_q4_0(const float* x, BlockQ4_0* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += 32) {
    float amax = 0.f, m = 0.f;
    for (int i = 0; i < 32; ++i)
      if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), m = x[i];
    y[b].d = f32_to_f16(m / -8.f);
    const float d = f16_to_f32(y[b].d);
    const float id = d != 0.f ? 1.f / d : 0.f;
    for (int i = 0; i < 16; ++i) {
      const int n0 = std::clamp(nearest_int(x[i] * id) + 8, 0, 15);
      const int n1 = std::clamp(nearest_int(x[i + 16] * id) + 8, 0, 15);
      y[b].qs[i] = uint8_t(n0 | n1 << 4);
    }
  }
}

void quantize_q4_k(const float* x, BlockQ4_K* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += 256) {
    float step[8], off[8];
    for (int j = 0; j < 8; ++j) {
      float lo = 0.f, hi = 0.f;  // min clamped to <= 0 so the offset m >= 0
      for (int i = 0; i < 32; ++i) lo = std::min(lo, x[32 * j + i]), hi = std::max(hi, x[32 * j + i]);
      hi = std::max(hi, lo);
      step[j] = (hi - lo) / 15.f;
      off[j] = -lo;
    }
    const float max_step = *std::max_element(step, step + 8), max_off = *std::max_element(off, off + 8);
    y[b].d = f32_to_f16(max_step / 63.f);
    y[b].dmin = f32_to_f16(max_off / 63.f);
    const float d = f16_to_f32(y[b].d), dmin = f16_to_f32(y[b].dmin);
    uint8_t sc[8], mq[8];
    for (int j = 0; j < 8; ++j) {
      sc[j] = uint8_t(d > 0.f ? std::clamp(nearest_int(step[j] / d), 0, 63) : 0);
      mq[j] = uint8_t(dmin > 0.f ? std::clamp(nearest_int(off[j] / dmin), 0, 63) : 0);
    }
    std::memset(y[b].scales, 0, 12);
    for (int j = 0; j < 8; ++j) {
      if (j < 4) {
        y[b].scales[j] = sc[j];
        y[b].scales[j + 4] = mq[j];
      } else {
        y[b].scales[j + 4] = uint8_t((sc[j] & 15) | (mq[j] & 15) << 4);
        y[b].scales[j - 4] |= uint8_t((sc[j] >> 4) << 6);
        y[b].scales[j] |= uint8_t((mq[j] >> 4) << 6);
      }
    }
    uint8_t n[256];
    for (int j = 0; j < 8; ++j) {
      const float s = d * float(sc[j]), o = dmin * float(mq[j]);
      const float is = s > 0.f ? 1.f / s : 0.f;
      for (int i = 0; i < 32; ++i) n[32 * j + i] = uint8_t(std::clamp(nearest_int((x[32 * j + i] + o) * is), 0, 15));
    }
    for (int c = 0; c < 4; ++c)
      for (int i = 0; i < 32; ++i) y[b].qs[32 * c + i] = uint8_t(n[64 * c + i] | n[64 * c + 32 + i] << 4);
  }
}

}  // namespace

bool parse_quant_format(const char* name, DType* out) {
  if (!name) return false;
  std::string s(name);
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  if (s == "q8_0") *out = DType::Q8_0;
  else if (s == "q4_0") *out = DType::Q4_0;
  else if (s == "q4_k") *out = DType::Q4_K;
  else return false;
  return true;
}

void quantize_row(DType t, const float* src, void* dst, int64_t n) {
  if (!dtype_is_quantized(t) || n % dtype_block_elems(t) != 0)
    throw Error("ERR_ARGUMENT", std::string("quantize_row: ") + std::to_string(n) + " elements are not whole " +
                                    dtype_name(t) + " blocks");
  const int64_t nb = n / dtype_block_elems(t);
  if (t == DType::Q8_0) quantize_q8_0(src, static_cast<BlockQ8_0*>(dst), nb);
  else if (t == DType::Q4_0) quantize_q4_0(src, static_cast<BlockQ4_0*>(dst), nb);
  else quantize_q4_k(src, static_cast<BlockQ4_K*>(dst), nb);
}

void dequantize_row(DType t, const void* src, float* dst, int64_t n) {
  if (!dtype_is_quantized(t) || n % dtype_block_elems(t) != 0)
    throw Error("ERR_ARGUMENT", std::string("dequantize_row: ") + std::to_string(n) + " elements are not whole " +
                                    dtype_name(t) + " blocks");
  const int64_t nb = n / dtype_block_elems(t);
  if (t == DType::Q8_0) {
    const BlockQ8_0* x = static_cast<const BlockQ8_0*>(src);
    for (int64_t b = 0; b < nb; ++b) {
      const float d = f16_to_f32(x[b].d);
      for (int i = 0; i < 32; ++i) dst[32 * b + i] = d * float(x[b].q[i]);
    }
  } else if (t == DType::Q4_0) {
    const BlockQ4_0* x = static_cast<const BlockQ4_0*>(src);
    for (int64_t b = 0; b < nb; ++b) {
      const float d = f16_to_f32(x[b].d);
      for (int i = 0; i < 16; ++i) {
        dst[32 * b + i] = d * float((x[b].qs[i] & 15) - 8);
        dst[32 * b + 16 + i] = d * float((x[b].qs[i] >> 4) - 8);
      }
    }
  } else {
    const BlockQ4_K* x = static_cast<const BlockQ4_K*>(src);
    for (int64_t b = 0; b < nb; ++b) {
      const float d = f16_to_f32(x[b].d), dmin = f16_to_f32(x[b].dmin);
      for (int j = 0; j < 8; ++j) {
        int sc, m;
        q4k_scale_min(x[b].scales, j, &sc, &m);
        const float s = d * float(sc), o = dmin * float(m);
        const uint8_t* q = x[b].qs + 32 * (j / 2);
        const int shift = (j & 1) * 4;
        for (int i = 0; i < 32; ++i) dst[256 * b + 32 * j + i] = s * float((q[i] >> shift) & 15) - o;
      }
    }
  }
}

}  // namespace dg
