// The guard: a multi-layer aggregator followed by the security analyzer
// (DESIGN.md "Security modules"), composed from the ops in kernels/ops.h over a
// batch of N tokens of any number of sequences, forward and backward.
//
//   a = aggregate(h_1..h_m)                       [N][d]
//   z = [a ; E[id]]                               [N][d + 128]
//   x1 = dropout(relu(ln1(fc1 z)))                [N][512]
//   x2 = dropout(relu(ln2(fc2 x1)))               [N][256]
//   x3 = relu(fc3 x2)                             [N][128]
//   score = sigmoid(fc4 x3)                       [N]
//
// Every weight is read once per call whatever N is; the token embedding is
// gathered (forward) and scatter-added (backward) for the rows the batch uses.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/thread_pool.h"

namespace dg::guard {

enum class Aggregation { Attention, Mean, Last, Weighted };

constexpr int64_t kEmbed = 128, kHidden1 = 512, kHidden2 = 256, kHidden3 = 128;
constexpr float kLayerNormEps = 1e-5f;

// Parameter tensors, in guard.safetensors' names (tensor_name).
enum Tensor : int {
  kAggQueryW, kAggQueryB, kAggKeyW, kAggKeyB, kAggValueW, kAggValueB, kAggOutputW, kAggOutputB,
  kAggLayerLogits,
  kEmbedding,
  kFc1W, kFc1B, kLn1W, kLn1B, kFc2W, kFc2B, kLn2W, kLn2B, kFc3W, kFc3B, kFc4W, kFc4B,
  kTensorCount
};

struct Dims {
  int64_t d = 0;      // hidden size of the base model
  int64_t m = 0;      // layers aggregated
  int64_t vocab = 0;  // rows of the token embedding
  Aggregation aggregation = Aggregation::Attention;
  float dropout = 0.1f;
};

const char* tensor_name(int tensor);
// Shape of a tensor for these dims ([out, in] for weights); empty when the
// aggregation does not use it.
std::vector<int64_t> tensor_shape(int tensor, const Dims& dims);
int64_t tensor_size(int tensor, const Dims& dims);  // 0 when unused

struct Params {
  const float* t[kTensorCount] = {};
};
struct Grads {
  float* t[kTensorCount] = {};
};

// Inputs and every activation the backward needs. The caller fills ids and h
// (layer-major [m][N][d]); guard_forward sizes the rest.
struct Tape {
  int64_t N = 0;
  std::vector<int32_t> ids;
  std::vector<float> h;
  std::vector<float> agg, mu, q, u, alpha, hbar, o, layer_weights;  // aggregator
  std::vector<float> z, h1, mean1, rstd1, r1, x1, h2, mean2, rstd2, r2, x2, h3, x3, logit, score;
  std::vector<uint8_t> mask1, mask2;
  bool train = false;
};

// Inference-only folding of the attention aggregator into its neighbours (the
// same function of the inputs, re-associated; valid while the weights it was
// built from do not change):
//   q . k_l = (G mu + cu) . h_l + c          G = Wk^T Wq, cu = Wk^T bq, c the same for every l
//   fc1 z   = F hbar + W1e E[id] + c1        F = W1a Wo Wv, c1 = W1a (Wo bv + bo) + b1
// (W1a / W1e: fc1's columns for the aggregate / the token embedding). A token then
// costs one d x d and one 512 x d product instead of four d x d and one 512 x d.
struct FusedAttention {
  const float *query_key, *query_key_bias, *value_fc1, *value_fc1_bias;  // G [d][d], cu [d], F [512][d], c1 [512]
};
// Writes G, cu, F and c1 into caller buffers of those sizes.
void guard_fuse(float* query_key, float* query_key_bias, float* value_fc1, float* value_fc1_bias, const Dims& dims,
                const Params& p, ThreadPool& pool);

// Scores every token of tape.ids / tape.h into tape.score. `train`: dropout on,
// drawn from `seed`. Checks ids < vocab.
void guard_forward(Tape& tape, const Dims& dims, const Params& p, bool train, uint64_t seed, ThreadPool& pool);
// The same scores in eval mode through a FusedAttention built from p (attention
// aggregation only); the tape is not usable for a backward.
void guard_forward_fused(Tape& tape, const Dims& dims, const Params& p, const FusedAttention& f, ThreadPool& pool);

// From dscore[N] = d(loss)/d(token score): accumulates parameter gradients into g
// (null entries are skipped, the token embedding is scatter-added by id) and
// writes dh [m][N][d] (overwritten).
void guard_backward(float* dh, const Grads& g, const float* dscore, const Tape& tape, const Dims& dims, const Params& p,
                    ThreadPool& pool);

}  // namespace dg::guard
