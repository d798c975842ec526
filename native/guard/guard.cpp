// Composition of the guard's forward and backward from kernels/ops.h.
#include "guard/guard.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/ops.h"

namespace dg::guard {
namespace {

Matrix f32(const float* w, int64_t rows, int64_t cols) { return Matrix{w, DType::F32, rows, cols}; }

LayerAttentionParams attention_params(const Params& p) {
  return {p.t[kAggQueryW], p.t[kAggQueryB], p.t[kAggKeyW], p.t[kAggKeyB],
          p.t[kAggValueW], p.t[kAggValueB], p.t[kAggOutputW], p.t[kAggOutputB]};
}

// A gradient slot that accumulates into scratch when the caller skips it, so the
// kernels can always write.
float* grad_or(float* g, std::vector<float>& scratch, int64_t n) {
  if (g) return g;
  scratch.assign(size_t(n), 0.f);
  return scratch.data();
}

}  // namespace

const char* tensor_name(int tensor) {
  static const char* names[kTensorCount] = {
      "aggregator.query.weight", "aggregator.query.bias", "aggregator.key.weight", "aggregator.key.bias",
      "aggregator.value.weight", "aggregator.value.bias", "aggregator.output.weight", "aggregator.output.bias",
      "aggregator.layer_logits", "analyzer.token_embedding.weight",
      "analyzer.fc1.weight", "analyzer.fc1.bias", "analyzer.ln1.weight", "analyzer.ln1.bias",
      "analyzer.fc2.weight", "analyzer.fc2.bias", "analyzer.ln2.weight", "analyzer.ln2.bias",
      "analyzer.fc3.weight", "analyzer.fc3.bias", "analyzer.fc4.weight", "analyzer.fc4.bias"};
  return tensor >= 0 && tensor < kTensorCount ? names[tensor] : "";
}

std::vector<int64_t> tensor_shape(int tensor, const Dims& dims) {
  const int64_t d = dims.d;
  const bool attention = dims.aggregation == Aggregation::Attention;
  switch (tensor) {
    case kAggQueryW: case kAggKeyW: case kAggValueW: case kAggOutputW:
      return attention ? std::vector<int64_t>{d, d} : std::vector<int64_t>{};
    case kAggQueryB: case kAggKeyB: case kAggValueB: case kAggOutputB:
      return attention ? std::vector<int64_t>{d} : std::vector<int64_t>{};
    case kAggLayerLogits:
      return dims.aggregation == Aggregation::Weighted ? std::vector<int64_t>{dims.m} : std::vector<int64_t>{};
    case kEmbedding: return {dims.vocab, kEmbed};
    case kFc1W: return {kHidden1, d + kEmbed};
    case kFc1B: case kLn1W: case kLn1B: return {kHidden1};
    case kFc2W: return {kHidden2, kHidden1};
    case kFc2B: case kLn2W: case kLn2B: return {kHidden2};
    case kFc3W: return {kHidden3, kHidden2};
    case kFc3B: return {kHidden3};
    case kFc4W: return {1, kHidden3};
    case kFc4B: return {1};
    default: return {};
  }
}

int64_t tensor_size(int tensor, const Dims& dims) {
  const std::vector<int64_t> s = tensor_shape(tensor, dims);
  if (s.empty()) return 0;
  int64_t n = 1;
  for (int64_t v : s) n *= v;
  return n;
}

namespace {

void size(std::vector<float>& v, int64_t n) { v.resize(size_t(n)); }

void check_tape(const Tape& tp, const Dims& dims) {
  const int64_t N = tp.N, d = dims.d, m = dims.m;
  if (N < 0 || d <= 0 || m <= 0) throw Error("ERR_ARGUMENT", "guard_forward: bad dimensions");
  if (int64_t(tp.ids.size()) != N || int64_t(tp.h.size()) != m * N * d)
    throw Error("ERR_ARGUMENT", "guard_forward: ids / hidden sizes do not match the token count");
  for (int64_t t = 0; t < N; ++t)
    if (tp.ids[size_t(t)] < 0 || tp.ids[size_t(t)] >= dims.vocab)
      throw Error("ERR_TOKEN_ID", "guard: token id " + std::to_string(tp.ids[size_t(t)]) + " is outside the vocabulary [0, " +
                                      std::to_string(dims.vocab) + ")");
}

// From h1 = fc1 z onward: ln1, relu, dropout, fc2, ln2, relu, dropout, fc3, relu, fc4, sigmoid.
void analyzer_tail(Tape& tp, const Dims& dims, const Params& p, bool train, uint64_t seed, ThreadPool& pool);

}  // namespace

void guard_forward(Tape& tp, const Dims& dims, const Params& p, bool train, uint64_t seed, ThreadPool& pool) {
  check_tape(tp, dims);
  const int64_t N = tp.N, d = dims.d, m = dims.m, dz = d + kEmbed;
  tp.train = train;
  size(tp.agg, N * d);
  switch (dims.aggregation) {
    case Aggregation::Attention: {
      size(tp.mu, N * d), size(tp.q, N * d), size(tp.u, N * d), size(tp.alpha, N * m), size(tp.hbar, N * d),
          size(tp.o, N * d);
      const LayerAttentionSaved s{tp.mu.data(), tp.q.data(), tp.u.data(), tp.alpha.data(), tp.hbar.data(), tp.o.data()};
      layer_attention_forward(tp.agg.data(), s, tp.h.data(), m, N, d, attention_params(p), pool);
      break;
    }
    case Aggregation::Mean: layer_mean_forward(tp.agg.data(), tp.h.data(), m, N, d); break;
    case Aggregation::Last: layer_last_forward(tp.agg.data(), tp.h.data(), m, N, d); break;
    case Aggregation::Weighted:
      size(tp.layer_weights, m);
      layer_weighted_forward(tp.agg.data(), tp.layer_weights.data(), tp.h.data(), p.t[kAggLayerLogits], m, N, d);
      break;
  }
  // z = [a ; E[id]]: only the rows this batch uses are read.
  size(tp.z, N * dz);
  for (int64_t t = 0; t < N; ++t) {
    std::memcpy(tp.z.data() + t * dz, tp.agg.data() + t * d, size_t(d) * 4);
    std::memcpy(tp.z.data() + t * dz + d, p.t[kEmbedding] + int64_t(tp.ids[size_t(t)]) * kEmbed, size_t(kEmbed) * 4);
  }
  size(tp.h1, N * kHidden1);
  linear_forward(tp.h1.data(), tp.z.data(), f32(p.t[kFc1W], kHidden1, dz), p.t[kFc1B], N, pool);
  analyzer_tail(tp, dims, p, train, seed, pool);
}

namespace {

void analyzer_tail(Tape& tp, const Dims& dims, const Params& p, bool train, uint64_t seed, ThreadPool& pool) {
  const int64_t N = tp.N;
  size(tp.mean1, N), size(tp.rstd1, N), size(tp.r1, N * kHidden1), size(tp.x1, N * kHidden1);
  layernorm_forward(tp.r1.data(), tp.mean1.data(), tp.rstd1.data(), tp.h1.data(), p.t[kLn1W], p.t[kLn1B], N, kHidden1,
                    kLayerNormEps);
  relu_forward(tp.r1.data(), tp.r1.data(), N * kHidden1);
  if (train && dims.dropout > 0.f) {
    tp.mask1.resize(size_t(N * kHidden1));
    dropout_forward(tp.x1.data(), tp.mask1.data(), tp.r1.data(), N * kHidden1, dims.dropout, seed, 1, 0);
  } else {
    tp.x1 = tp.r1;
  }
  size(tp.h2, N * kHidden2), size(tp.mean2, N), size(tp.rstd2, N), size(tp.r2, N * kHidden2), size(tp.x2, N * kHidden2);
  linear_forward(tp.h2.data(), tp.x1.data(), f32(p.t[kFc2W], kHidden2, kHidden1), p.t[kFc2B], N, pool);
  layernorm_forward(tp.r2.data(), tp.mean2.data(), tp.rstd2.data(), tp.h2.data(), p.t[kLn2W], p.t[kLn2B], N, kHidden2,
                    kLayerNormEps);
  relu_forward(tp.r2.data(), tp.r2.data(), N * kHidden2);
  if (train && dims.dropout > 0.f) {
    tp.mask2.resize(size_t(N * kHidden2));
    dropout_forward(tp.x2.data(), tp.mask2.data(), tp.r2.data(), N * kHidden2, dims.dropout, seed, 2, 0);
  } else {
    tp.x2 = tp.r2;
  }
  size(tp.h3, N * kHidden3), size(tp.x3, N * kHidden3), size(tp.logit, N), size(tp.score, N);
  linear_forward(tp.h3.data(), tp.x2.data(), f32(p.t[kFc3W], kHidden3, kHidden2), p.t[kFc3B], N, pool);
  relu_forward(tp.x3.data(), tp.h3.data(), N * kHidden3);
  linear_forward(tp.logit.data(), tp.x3.data(), f32(p.t[kFc4W], 1, kHidden3), p.t[kFc4B], N, pool);
  sigmoid_forward(tp.score.data(), tp.logit.data(), N);
}

}  // namespace

void guard_fuse(float* query_key, float* query_key_bias, float* value_fc1, float* value_fc1_bias, const Dims& dims,
                const Params& p, ThreadPool& pool) {
  if (dims.aggregation != Aggregation::Attention) throw Error("ERR_ARGUMENT", "guard_fuse: only the attention aggregation folds");
  const int64_t d = dims.d, dz = d + kEmbed;
  const Matrix wq = f32(p.t[kAggQueryW], d, d), wk = f32(p.t[kAggKeyW], d, d), wv = f32(p.t[kAggValueW], d, d);
  // G[i][j] = sum_o Wk[o][i] Wq[o][j]: the weight gradient of a linear layer with dy = Wk, x = Wq.
  std::fill(query_key, query_key + d * d, 0.f);
  linear_backward(nullptr, query_key, nullptr, p.t[kAggKeyW], p.t[kAggQueryW], wq, d, pool);
  // cu = Wk^T bq
  std::fill(query_key_bias, query_key_bias + d, 0.f);
  linear_backward(query_key_bias, nullptr, nullptr, p.t[kAggQueryB], nullptr, wk, 1, pool);
  // M = Wo Wv (input gradient with dy = Wo), then F = W1a M.
  std::vector<float> M(size_t(d * d), 0.f), w1a(size_t(kHidden1 * d));
  linear_backward(M.data(), nullptr, nullptr, p.t[kAggOutputW], nullptr, wv, d, pool);
  for (int64_t r = 0; r < kHidden1; ++r)
    std::memcpy(w1a.data() + r * d, p.t[kFc1W] + r * dz, size_t(d) * 4);
  std::fill(value_fc1, value_fc1 + kHidden1 * d, 0.f);
  linear_backward(value_fc1, nullptr, nullptr, w1a.data(), nullptr, f32(M.data(), d, d), kHidden1, pool);
  // c1 = W1a (Wo bv + bo) + b1
  std::vector<float> ob(static_cast<size_t>(d));
  linear_forward(ob.data(), p.t[kAggValueB], f32(p.t[kAggOutputW], d, d), p.t[kAggOutputB], 1, pool);
  linear_forward(value_fc1_bias, ob.data(), f32(w1a.data(), kHidden1, d), p.t[kFc1B], 1, pool);
}

void guard_forward_fused(Tape& tp, const Dims& dims, const Params& p, const FusedAttention& f, ThreadPool& pool) {
  if (dims.aggregation != Aggregation::Attention) throw Error("ERR_ARGUMENT", "guard_forward_fused: attention aggregation only");
  check_tape(tp, dims);
  const int64_t N = tp.N, d = dims.d, m = dims.m, plane = N * d;
  tp.train = false;
  const float inv_m = 1.f / float(m), c = 1.f / std::sqrt(float(d));
  size(tp.mu, plane), size(tp.u, plane), size(tp.hbar, plane);
  const float* h = tp.h.data();
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 14) / (m * d));
  pool.parallel_for(N, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* mu = tp.mu.data() + t * d;
      std::memcpy(mu, h + t * d, size_t(d) * 4);
      for (int64_t l = 1; l < m; ++l)
        for (int64_t i = 0; i < d; ++i) mu[i] += h[l * plane + t * d + i];
      for (int64_t i = 0; i < d; ++i) mu[i] *= inv_m;
    }
  }, grain);
  linear_forward(tp.u.data(), tp.mu.data(), f32(f.query_key, d, d), f.query_key_bias, N, pool);
  pool.parallel_for(N, [&](int64_t t0, int64_t t1) {
    std::vector<float> sc(static_cast<size_t>(m));
    for (int64_t t = t0; t < t1; ++t) {
      float mx = -INFINITY;
      for (int64_t l = 0; l < m; ++l) {
        const float* hl = h + l * plane + t * d;
        const float* ut = tp.u.data() + t * d;
        float acc[8] = {};
        int64_t i = 0;
        for (; i + 8 <= d; i += 8)
          for (int j = 0; j < 8; ++j) acc[j] += ut[i + j] * hl[i + j];
        for (; i < d; ++i) acc[0] += ut[i] * hl[i];
        const float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        sc[size_t(l)] = c * s;
        mx = std::max(mx, sc[size_t(l)]);
      }
      float sum = 0.f;
      for (int64_t l = 0; l < m; ++l) sum += (sc[size_t(l)] = std::exp(sc[size_t(l)] - mx));
      float* hbar = tp.hbar.data() + t * d;
      std::fill(hbar, hbar + d, 0.f);
      for (int64_t l = 0; l < m; ++l) {
        const float a = sc[size_t(l)] / sum;
        const float* hl = h + l * plane + t * d;
        for (int64_t i = 0; i < d; ++i) hbar[i] += a * hl[i];
      }
    }
  }, grain);
  // h1 = F hbar + c1 + W1e E[id]: the embedding columns of fc1 on the gathered rows.
  size(tp.h1, N * kHidden1);
  linear_forward(tp.h1.data(), tp.hbar.data(), f32(f.value_fc1, kHidden1, d), f.value_fc1_bias, N, pool);
  std::vector<float> e(size_t(N * kEmbed)), w1e(size_t(kHidden1 * kEmbed));
  for (int64_t t = 0; t < N; ++t)
    std::memcpy(e.data() + t * kEmbed, p.t[kEmbedding] + int64_t(tp.ids[size_t(t)]) * kEmbed, size_t(kEmbed) * 4);
  for (int64_t r = 0; r < kHidden1; ++r)
    std::memcpy(w1e.data() + r * kEmbed, p.t[kFc1W] + r * (d + kEmbed) + d, size_t(kEmbed) * 4);
  linear_forward(tp.h1.data(), e.data(), f32(w1e.data(), kHidden1, kEmbed), nullptr, N, pool, true);
  analyzer_tail(tp, dims, p, false, 0, pool);
}

void guard_backward(float* dh, const Grads& g, const float* dscore, const Tape& tp, const Dims& dims, const Params& p,
                    ThreadPool& pool) {
  const int64_t N = tp.N, d = dims.d, m = dims.m, dz = d + kEmbed;
  if (int64_t(tp.score.size()) != N) throw Error("ERR_ARGUMENT", "guard_backward: the tape has no forward pass");
  std::fill(dh, dh + m * N * d, 0.f);
  if (N == 0) return;
  std::vector<float> scratch[kTensorCount];
  float* G[kTensorCount];
  for (int i = 0; i < kTensorCount; ++i) G[i] = grad_or(g.t[i], scratch[i], tensor_size(i, dims));
  const bool dropped = tp.train && dims.dropout > 0.f;

  std::vector<float> dlogit(size_t(N), 0.f);
  sigmoid_backward(dlogit.data(), dscore, tp.score.data(), N);
  std::vector<float> dx3(size_t(N * kHidden3), 0.f), dh3(size_t(N * kHidden3), 0.f);
  linear_backward(dx3.data(), G[kFc4W], G[kFc4B], dlogit.data(), tp.x3.data(), f32(p.t[kFc4W], 1, kHidden3), N, pool);
  relu_backward(dh3.data(), dx3.data(), tp.x3.data(), N * kHidden3);

  std::vector<float> dx2(size_t(N * kHidden2), 0.f), dr2(size_t(N * kHidden2), 0.f), dh2(size_t(N * kHidden2), 0.f);
  linear_backward(dx2.data(), G[kFc3W], G[kFc3B], dh3.data(), tp.x2.data(), f32(p.t[kFc3W], kHidden3, kHidden2), N, pool);
  if (dropped) dropout_backward(dr2.data(), dx2.data(), tp.mask2.data(), N * kHidden2, dims.dropout);
  else dr2 = dx2;
  std::vector<float> dl2(size_t(N * kHidden2), 0.f);
  relu_backward(dl2.data(), dr2.data(), tp.r2.data(), N * kHidden2);
  layernorm_backward(dh2.data(), G[kLn2W], G[kLn2B], dl2.data(), tp.h2.data(), tp.mean2.data(), tp.rstd2.data(),
                     p.t[kLn2W], N, kHidden2);

  std::vector<float> dx1(size_t(N * kHidden1), 0.f), dr1(size_t(N * kHidden1), 0.f), dh1(size_t(N * kHidden1), 0.f);
  linear_backward(dx1.data(), G[kFc2W], G[kFc2B], dh2.data(), tp.x1.data(), f32(p.t[kFc2W], kHidden2, kHidden1), N, pool);
  if (dropped) dropout_backward(dr1.data(), dx1.data(), tp.mask1.data(), N * kHidden1, dims.dropout);
  else dr1 = dx1;
  std::vector<float> dl1(size_t(N * kHidden1), 0.f);
  relu_backward(dl1.data(), dr1.data(), tp.r1.data(), N * kHidden1);
  layernorm_backward(dh1.data(), G[kLn1W], G[kLn1B], dl1.data(), tp.h1.data(), tp.mean1.data(), tp.rstd1.data(),
                     p.t[kLn1W], N, kHidden1);

  std::vector<float> dzv(size_t(N * dz), 0.f);
  linear_backward(dzv.data(), G[kFc1W], G[kFc1B], dh1.data(), tp.z.data(), f32(p.t[kFc1W], kHidden1, dz), N, pool);
  // Split dz: the aggregate's part flows back to the layers, the embedding's
  // part is scatter-added into the rows of the tokens seen.
  std::vector<float> dagg(size_t(N * d));
  for (int64_t t = 0; t < N; ++t) {
    std::memcpy(dagg.data() + t * d, dzv.data() + t * dz, size_t(d) * 4);
    float* row = G[kEmbedding] + int64_t(tp.ids[size_t(t)]) * kEmbed;
    const float* src = dzv.data() + t * dz + d;
    for (int64_t i = 0; i < kEmbed; ++i) row[i] += src[i];
  }
  switch (dims.aggregation) {
    case Aggregation::Attention: {
      const LayerAttentionSaved s{const_cast<float*>(tp.mu.data()), const_cast<float*>(tp.q.data()),
                                  const_cast<float*>(tp.u.data()), const_cast<float*>(tp.alpha.data()),
                                  const_cast<float*>(tp.hbar.data()), const_cast<float*>(tp.o.data())};
      const LayerAttentionGrads ag{G[kAggQueryW], G[kAggQueryB], G[kAggKeyW], G[kAggKeyB],
                                   G[kAggValueW], G[kAggValueB], G[kAggOutputW], G[kAggOutputB]};
      layer_attention_backward(dh, ag, dagg.data(), s, tp.h.data(), m, N, d, attention_params(p), pool);
      break;
    }
    case Aggregation::Mean: layer_mean_backward(dh, dagg.data(), m, N, d); break;
    case Aggregation::Last: layer_last_backward(dh, dagg.data(), m, N, d); break;
    case Aggregation::Weighted:
      layer_weighted_backward(dh, G[kAggLayerLogits], dagg.data(), tp.h.data(), tp.layer_weights.data(), m, N, d);
      break;
  }
}

}  // namespace dg::guard
