// One training sequence through the transformer: forward with saved activations
// (or only layer inputs, under activation recompute), the next-token
// cross-entropy and KL(p_base || p_lora) over the LM head, then a backward that
// also accepts gradients for chosen hidden states (the guard's loss) and
// accumulates the LoRA factors' gradients.
//
// The loss terms are kept apart until backward: forward returns the weighted sums
// ce = sum_t wce[t] CE_t and kl = sum_t wkl[t] KL_t and keeps d(ce)/d(final norm
// output) and d(kl)/d(final norm output) ([T][d] each); backward(ce_coef, kl_coef,
// dhidden) combines them, so the caller can normalize over a batch or clamp the KL
// term (its gradient is 0 above the clamp) after seeing every term.
//
// The base pass for KL runs the same frozen weights with the adapter off and
// saves nothing. Hidden-state indices follow Transformer::step: 0 = embeddings,
// i = output of layer i-1, L = final RMSNorm output.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "model/layer_train.h"
#include "model/transformer.h"

namespace dg {

struct TrainPassOptions {
  std::vector<int32_t> capture;     // hidden-state indices in [0, L], ascending, unique
  std::vector<int32_t> targets;     // [T] next-token target of row t (-1: none); empty: no CE
  std::vector<float> ce_weights;    // [T]
  std::vector<float> kl_weights;    // [T]; empty: no KL term and no base pass
  bool recompute = false;           // keep only layer inputs; recompute each layer in backward
  bool return_logits = false;       // keep the adapted logits [T][V] (tests)
};

struct TrainPassResult {
  double ce = 0.0;                  // sum_t wce[t] CE_t
  double kl = 0.0;                  // sum_t wkl[t] KL_t
  std::vector<float> hidden;        // [capture][T][d]
  std::vector<float> logits;        // [T][V] when return_logits
  uint64_t activation_bytes = 0;    // saved between forward and backward
};

class TrainPass {
 public:
  // Validates ids and options (ERR_TOKEN_ID / ERR_ARGUMENT) before any work.
  TrainPass(std::shared_ptr<const Transformer> model, std::vector<int32_t> ids, TrainPassOptions opts);
  const TrainPassResult& forward(const TrainableLora* lora);
  // dhidden: one [T][d] array (or nullptr) per capture index. May run once.
  void backward(float ce_coef, float kl_coef, const std::vector<const float*>& dhidden);
  int64_t length() const { return T_; }

 private:
  std::shared_ptr<const Transformer> model_;
  std::vector<int32_t> ids_;
  TrainPassOptions opts_;
  int64_t T_;
  const TrainableLora* lora_ = nullptr;
  std::vector<float> cos_, sin_;
  std::vector<LayerActivations> acts_;  // [L]
  std::vector<float> x_final_;          // [T][d] last layer's output (final norm input)
  std::vector<float> dxn_ce_, dxn_kl_;  // [T][d]
  TrainPassResult result_;
  bool forward_done_ = false, backward_done_ = false;
};

}  // namespace dg
