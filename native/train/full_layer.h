// Backward of one transformer block (model/layer_train.h's layer_forward) with
// the gradient of every weight of the block: full-parameter training.
#pragma once
#include "model/layer_train.h"

namespace dg {

// Gradient buffers of one block, f32, shaped like the weights; biases may be
// nullptr when the config has none. All are ACCUMULATED (+=).
struct LayerGrads {
  float *input_norm, *post_attention_norm;
  float *q, *k, *v, *o, *gate, *up, *down;
  float *q_bias, *k_bias, *v_bias, *o_bias, *gate_bias, *up_bias, *down_bias;
};

// dx[T][d]: in = d(loss)/d(layer output), out = d(loss)/d(layer input); `a` holds
// the layer's activations from layer_forward (with ctx.lora == nullptr).
void full_layer_backward(const LayerPassContext& ctx, int64_t layer, const LayerActivations& a, float* dx,
                         const LayerGrads& g);

}  // namespace dg
