// A PEFT LoRA adapter over the transformer's projections: for each targeted
// linear layer, y += scale * (x A^T) B^T with A [r][in] and B [out][r], stored in
// the adapter file's dtype (memory-mapped like the base weights). The base stays
// frozen; an adapter can be attached, swapped or skipped per step.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/tensor_binder.h"

namespace dg {

enum class Projection : int { Q = 0, K, V, O, Gate, Up, Down };
constexpr int kNumProjections = 7;
const char* projection_name(Projection p);          // "q_proj", ..., "down_proj"
bool parse_projection(const std::string& name, Projection* out);

struct LoraFactors {
  Matrix a;  // [rank][in]
  Matrix b;  // [out][rank]
  bool present() const { return a.data != nullptr; }
};

struct LoraSpec {
  int64_t rank = 0;
  float scale = 1.f;                 // lora_alpha / r (or / sqrt(r) with rsLoRA)
  std::vector<Projection> targets;   // target_modules
  std::vector<int64_t> layers;       // layers_to_transform; empty = all
};

struct LoraAdapter {
  LoraSpec spec;
  std::vector<std::array<LoraFactors, kNumProjections>> layers;  // [n_layers]
  TensorStorage storage;

  const LoraFactors* factors(int64_t layer, Projection p) const {
    const LoraFactors& f = layers[size_t(layer)][size_t(p)];
    return f.present() ? &f : nullptr;
  }
};

LoraAdapter load_lora(const ModelConfig& cfg, const LoraSpec& spec, const std::vector<std::string>& files,
                      const std::vector<TensorRef>& tensors);

}  // namespace dg
