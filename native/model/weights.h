// Binds the tensors of a checkpoint (memory-mapped safetensors shards) to the
// transformer's parameters. 2-D matrices stay in their stored dtype inside the
// mapping; small 1-D tensors (norms, biases) are widened to f32 copies.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"
#include "model/tensor_binder.h"

namespace dg {

// A linear layer y = x W^T + b. (LoRA factors live in a LoraAdapter, which can
// be swapped or switched off per step without touching the frozen weights.)
struct Linear {
  Matrix w;
  std::vector<float> bias;  // empty: no bias
  const float* bias_ptr() const { return bias.empty() ? nullptr : bias.data(); }
};

struct LayerWeights {
  std::vector<float> input_norm, post_attention_norm;
  Linear q, k, v, o;
  Linear gate, up, down;
};

struct ModelWeights {
  Matrix embed;  // [vocab][hidden]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;
  Matrix lm_head;  // == embed when tied
  TensorStorage storage;  // the mapped files the views above point into
  std::vector<std::shared_ptr<void>> owned;  // buffers made at load (quantized weights) that views point into
};

// mode: memory-map the files (default) or read them into huge-page memory.
ModelWeights load_weights(const ModelConfig& cfg, const std::vector<std::string>& files,
                          const std::vector<TensorRef>& tensors, MappedFile::Mode mode = MappedFile::Mode::Map);

}  // namespace dg
