// Binds the tensors of a checkpoint (memory-mapped safetensors shards) to the
// transformer's parameters. 2-D matrices stay in their stored dtype inside the
// mapping; small 1-D tensors (norms, biases) are widened to f32 copies.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/mapped_file.h"
#include "model/config.h"

namespace dg {

// One entry of a safetensors header, as validated by lib/io/safetensors.ts.
struct TensorRef {
  std::string name;
  int32_t file = 0;         // index into the shard list
  DType dtype = DType::F32;
  std::string unsupported_dtype;  // non-empty: a dtype the kernels cannot read (e.g. "I64")
  std::vector<int64_t> shape;
  uint64_t offset = 0;      // absolute byte offset in the file
  uint64_t length = 0;      // byte length
};

// A linear layer y = x W^T + b. LoRA factors will hang off this struct so that
// every projection can carry an adapter without touching the call sites.
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
  std::vector<std::shared_ptr<MappedFile>> files;
  std::vector<std::unique_ptr<uint8_t[]>> realigned;  // copies of misaligned tensors
  uint64_t parameter_count = 0;
};

ModelWeights load_weights(const ModelConfig& cfg, const std::vector<std::string>& files,
                          const std::vector<TensorRef>& tensors);

}  // namespace dg
