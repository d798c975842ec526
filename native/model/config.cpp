#include "model/config.h"

#include <cmath>
#include <cstdint>

#include "core/tensor.h"

namespace dg {

void ModelConfig::check() const {
  auto fail = [](const std::string& msg) { throw Error("ERR_CONFIG", "invalid model config: " + msg); };
  if (hidden <= 0 || n_layers <= 0 || n_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0 ||
      intermediate <= 0 || vocab <= 0)
    fail("all sizes must be positive");
  // Each size fits int32 and so does a head width: every product the engine
  // forms from them then fits int64 (a wrapped product once passed the shape
  // checks and crashed the forward pass).
  const int64_t kMax = INT32_MAX;
  for (int64_t v : {hidden, n_layers, n_heads, n_kv_heads, head_dim, intermediate, vocab})
    if (v > kMax) fail("sizes must not exceed 2^31 - 1");
  if (n_heads * head_dim > kMax) fail("num_attention_heads x head_dim must not exceed 2^31 - 1");
  if (n_heads % n_kv_heads != 0) fail("num_attention_heads must be a multiple of num_key_value_heads");
  if (head_dim % 2 != 0) fail("head_dim must be even for rotary embeddings");
  if (!(rms_eps > 0)) fail("rms_norm_eps must be positive");
  if (int64_t(rope_inv_freq.size()) != head_dim / 2) fail("rope_inv_freq must have head_dim / 2 entries");
  for (float f : rope_inv_freq)
    if (!(f > 0) || !std::isfinite(f)) fail("rope_inv_freq entries must be finite and positive");
}

}  // namespace dg
