// Trainable LoRA factors and the fused LoRA forward/backward of one projection:
//   y += s * (drop(x) A^T) B^T        (A [r][in], B [out][r], f32)
// added onto the frozen projection's output (W + s BA is never formed). The
// factors and their gradients are f32 arrays owned by the caller (JavaScript
// Float32Arrays held for the duration of one native call, see
// bindings/lora_train_binding.cpp); gradients ACCUMULATE.
// Dropout on the LoRA input is a deterministic function of (seed, layer,
// projection, element), so a recomputed forward and the backward see the same mask.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "model/lora.h"

namespace dg {

struct LoraTrainFactors {
  const float* a = nullptr;  // [rank][in]
  const float* b = nullptr;  // [out][rank]
  float* ga = nullptr;       // d(loss)/dA, accumulated; nullptr: no gradient wanted
  float* gb = nullptr;       // d(loss)/dB
};

struct TrainableLora {
  int64_t rank = 0;
  float scale = 1.f;      // alpha / r, or alpha / sqrt(r) (rsLoRA)
  float dropout = 0.f;    // probability of zeroing an input element (training only)
  uint64_t seed = 0;      // dropout stream; change it every step
  std::vector<std::array<LoraTrainFactors, kNumProjections>> layers;  // [n_layers]; a == nullptr: no factors

  const LoraTrainFactors* factors(int64_t layer, Projection p) const {
    if (size_t(layer) >= layers.size()) return nullptr;
    const LoraTrainFactors& f = layers[size_t(layer)][size_t(p)];
    return f.a ? &f : nullptr;
  }
};

// y[T][out] += s * (drop(x) A^T) B^T.
void lora_forward(float* y, const float* x, int64_t T, int64_t in, int64_t out, const TrainableLora& lora,
                  const LoraTrainFactors& f, int64_t layer, Projection p, ThreadPool& pool);
// Given dy[T][out] and the same x: ga += (s dy B)^T drop(x), gb += dy^T (s drop(x) A^T),
// dx[T][in] += drop'(s (dy B) A) (the dropout mask and 1/(1-p) applied again).
void lora_backward(float* dx, const float* dy, const float* x, int64_t T, int64_t in, int64_t out,
                   const TrainableLora& lora, const LoraTrainFactors& f, int64_t layer, Projection p, ThreadPool& pool);

}  // namespace dg
