// Full-parameter training of a Llama/Qwen2 transformer (pretraining): every
// weight is trainable. The engine's inference weights are read-only memory maps,
// so a FullModel OWNS its weights instead: F32 master copies, one buffer per
// Hugging Face tensor, plus a ModelWeights whose views point straight into those
// buffers (or, with bf16_compute, into BF16 copies refreshed once per optimizer
// step by refresh_compute()). layer_forward (model/layer_train.cpp) therefore
// reads the trainer's weights with no per-step copy, and full_layer_backward
// (full_layer.cpp) accumulates the gradient of every weight.
//
// Parameters and gradients are exposed by name (HF tensor names) as raw f32
// buffers; the binding hands them to JavaScript as zero-copy ArrayBuffers, where
// lib/train/optimizer.ts's AdamW updates them in place and checkpoints read them.
//
// Packed-sequence LM loss: each row holds T + 1 token ids; inputs are ids[0..T),
// targets ids[1..T]; every row is one causal segment from position 0 (documents
// inside a row are separated by <|endoftext|> and may attend across it, as in
// GPT-2/Llama pretraining). The loss is the mean next-token cross-entropy over
// all B * T targets; gradients are those of that mean.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/weights.h"

namespace dg {

struct FullParam {
  std::string name;          // Hugging Face tensor name
  std::vector<int64_t> shape;
  float* data = nullptr;     // f32 master weights (owned by the FullModel)
  float* grad = nullptr;     // f32 gradient, same length
  int64_t size = 0;
  bool matrix = false;       // 2-D (has a BF16 compute copy under bf16_compute)
};

struct FullStepResult {
  double loss_sum = 0.0;  // sum of CE over the targets (nats)
  int64_t targets = 0;    // number of targets
};

class FullModel {
 public:
  // Parameters start at zero (the caller initializes or loads them).
  FullModel(ModelConfig cfg, bool bf16_compute);
  FullModel(const FullModel&) = delete;
  FullModel& operator=(const FullModel&) = delete;

  const ModelConfig& config() const { return cfg_; }
  std::vector<FullParam>& params() { return params_; }
  bool bf16_compute() const { return bf16_; }
  uint64_t parameter_count() const;

  // BF16 compute copies <- f32 masters (no-op in f32 mode). Call after every update.
  void refresh_compute();

  // rows: [B][T + 1] ids. With train: gradients are ZEROED, then set to
  // d(mean CE)/d(param). Without: forward only (held-out loss). Validates ids.
  FullStepResult step(const int32_t* rows, int64_t B, int64_t T1, bool train);

  // logits [T][V] of one sequence (tests: the trainer's forward).
  std::vector<float> logits(const int32_t* ids, int64_t T);

 private:
  void add_param(const std::string& name, std::vector<int64_t> shape, float* external, bool matrix);
  Matrix view(const FullParam& p, size_t matrix_index) const;
  double sequence(const int32_t* ids, int64_t T, float inv_count, bool train, std::vector<float>* logits_out);

  ModelConfig cfg_;
  bool bf16_;
  std::vector<std::unique_ptr<float[]>> owned_;      // master matrices and all gradients
  std::vector<std::vector<uint16_t>> compute_;       // bf16 copies, one per matrix param
  std::vector<FullParam> params_;
  ModelWeights w_;                                   // views into owned_/compute_; norms/biases are the masters
  // index of each weight's FullParam in params_
  struct LayerIdx {
    int in_norm, post_norm, q, k, v, o, gate, up, down, qb, kb, vb, ob, gateb, upb, downb;
  };
  std::vector<LayerIdx> idx_;
  int embed_ = -1, final_norm_ = -1, lm_head_ = -1;
};

}  // namespace dg
