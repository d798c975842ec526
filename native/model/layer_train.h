// One Llama/Qwen2 block, forward with saved activations and the matching
// backward, for training (llm.c's ActivationTensors, per layer). Unlike the
// inference pass (Transformer::run_pass, which keeps one scratch set and a KV
// cache), a training sequence is one whole causal segment starting at position 0
// and every tensor the backward reads is kept here.
//
//   x_in -> xn1 = rmsnorm(x_in) -> q, k, v = proj(xn1) (+ LoRA) -> rope(q), rope(k)
//        -> att = attention(q, k, v) -> x_mid = x_in + o_proj(att) (+ LoRA)
//        -> xn2 = rmsnorm(x_mid) -> gate, up = proj(xn2) (+ LoRA) -> h = silu(gate) * up
//        -> x_out = x_mid + down(h) (+ LoRA)
#pragma once
#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "model/config.h"
#include "model/lora_train.h"
#include "model/weights.h"

namespace dg {

struct LayerActivations {
  std::vector<float> x_in;         // [T][d] the layer's input (kept even under recompute)
  std::vector<float> xn1;          // [T][d]
  std::vector<float> q;            // [T][H * hd], rotated
  std::vector<float> k, v;         // [KV][T][hd], k rotated (the attention kernels' cache layout)
  std::vector<float> att;          // [T][H * hd] attention output (o_proj input)
  std::vector<float> x_mid;        // [T][d] residual after attention
  std::vector<float> xn2;          // [T][d]
  std::vector<float> gate, up, h;  // [T][I] pre-activations and silu(gate) * up
  // Frees everything but x_in (activation recompute keeps only layer inputs).
  void release_all_but_input();
  uint64_t bytes() const;
};

struct LayerPassContext {
  const ModelConfig& cfg;
  const ModelWeights& w;
  const TrainableLora* lora;  // nullptr: the frozen base (e.g. the KL reference pass)
  const float* cos_t;         // [T][hd/2] for positions 0..T-1
  const float* sin_t;
  int64_t T;
  ThreadPool& pool;
};

// x[T][d]: in = layer input, out = layer output. Fills `a` (x_in is a copy of the input).
void layer_forward(const LayerPassContext& ctx, int64_t layer, float* x, LayerActivations& a);
// dx[T][d]: in = d(loss)/d(layer output), out = d(loss)/d(layer input). Accumulates
// the LoRA gradients of this layer. `a` must hold this layer's activations.
void layer_backward(const LayerPassContext& ctx, int64_t layer, const LayerActivations& a, float* dx);

}  // namespace dg
