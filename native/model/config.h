// Transformer hyper-parameters, already validated by lib/config.ts (zod) from
// config.json; check() repeats the structural invariants the kernels rely on.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dg {

struct ModelConfig {
  int64_t hidden = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t intermediate = 0;
  int64_t vocab = 0;
  float rms_eps = 1e-6f;
  std::vector<float> rope_inv_freq;  // [head_dim / 2], rope_scaling applied (lib/rope.ts)
  bool tie_embeddings = false;
  bool qkv_bias = false;  // Qwen2 always; Llama with attention_bias
  bool o_bias = false;    // Llama with attention_bias
  bool mlp_bias = false;  // Llama with mlp_bias

  void check() const;  // throws dg::Error("ERR_CONFIG", ...)
};

}  // namespace dg
