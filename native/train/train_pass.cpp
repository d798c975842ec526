#include "train/train_pass.h"

#include <algorithm>
#include <string>

#include "kernels/ops.h"

namespace dg {
namespace {

constexpr int64_t kHeadChunk = 128;  // LM-head rows per chunk: bounds the [rows][V] logits buffers

// sum_t fn(t) over t < n, rows split across the pool, summed in row order (deterministic).
template <class Fn>
double rows_parallel(int64_t n, Fn fn) {
  std::vector<double> part(static_cast<size_t>(n));
  ThreadPool::global().parallel_for(n, [&](int64_t a, int64_t b) {
    for (int64_t t = a; t < b; ++t) part[size_t(t)] = fn(t);
  });
  double s = 0.0;
  for (double v : part) s += v;
  return s;
}

}  // namespace

TrainPass::TrainPass(std::shared_ptr<const Transformer> model, std::vector<int32_t> ids, TrainPassOptions opts)
    : model_(std::move(model)), ids_(std::move(ids)), opts_(std::move(opts)), T_(int64_t(ids_.size())) {
  const ModelConfig& c = model_->config();
  if (T_ == 0) throw Error("ERR_ARGUMENT", "a training sequence needs at least one token");
  for (int64_t t = 0; t < T_; ++t)
    if (ids_[size_t(t)] < 0 || ids_[size_t(t)] >= c.vocab)
      throw Error("ERR_TOKEN_ID", "token id " + std::to_string(ids_[size_t(t)]) + " at position " + std::to_string(t) +
                                      " is out of range [0, " + std::to_string(c.vocab) + ")");
  for (size_t i = 0; i < opts_.capture.size(); ++i) {
    const int32_t h = opts_.capture[i];
    if (h < 0 || h > c.n_layers)
      throw Error("ERR_ARGUMENT", "hidden-state index " + std::to_string(h) + " is out of range [0, " +
                                      std::to_string(c.n_layers) + "]");
    if (i > 0 && h <= opts_.capture[i - 1]) throw Error("ERR_ARGUMENT", "hidden-state indices must be ascending and unique");
  }
  if (!opts_.targets.empty()) {
    if (int64_t(opts_.targets.size()) != T_ || int64_t(opts_.ce_weights.size()) != T_)
      throw Error("ERR_ARGUMENT", "targets and CE weights need one entry per token");
    for (int64_t t = 0; t < T_; ++t) {
      const int32_t y = opts_.targets[size_t(t)];
      if (y < -1 || y >= c.vocab) throw Error("ERR_TOKEN_ID", "target id " + std::to_string(y) + " at position " + std::to_string(t) + " is out of range");
    }
  }
  if (!opts_.kl_weights.empty() && int64_t(opts_.kl_weights.size()) != T_)
    throw Error("ERR_ARGUMENT", "KL weights need one entry per token");
}

const TrainPassResult& TrainPass::forward(const TrainableLora* lora) {
  if (forward_done_) throw Error("ERR_ARGUMENT", "a training pass runs forward once");
  forward_done_ = true;
  lora_ = lora;
  const ModelConfig& c = model_->config();
  const ModelWeights& w = model_->weights();
  ThreadPool& pool = ThreadPool::global();
  const int64_t T = T_, d = c.hidden, L = c.n_layers, half = c.head_dim / 2;
  cos_.resize(size_t(T * half));
  sin_.resize(size_t(T * half));
  std::vector<double> pos(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) pos[size_t(t)] = double(t);
  rope_tables(cos_.data(), sin_.data(), pos.data(), T, c.rope_inv_freq.data(), half);

  std::vector<float> x(static_cast<size_t>(T * d));
  embedding_forward(x.data(), ids_.data(), T, w.embed);
  const bool kl = !opts_.kl_weights.empty();
  std::vector<float> xn_base;
  if (kl) {  // the frozen base: adapter off, nothing saved
    std::vector<float> xb = x;
    LayerActivations scratch;
    const LayerPassContext base{c, w, nullptr, cos_.data(), sin_.data(), T, pool};
    for (int64_t l = 0; l < L; ++l) layer_forward(base, l, xb.data(), scratch);
    xn_base.resize(size_t(T * d));
    rmsnorm_forward(xn_base.data(), xb.data(), w.final_norm.data(), T, d, c.rms_eps);
  }

  const LayerPassContext ctx{c, w, lora, cos_.data(), sin_.data(), T, pool};
  acts_.assign(size_t(L), LayerActivations());
  for (int64_t l = 0; l < L; ++l) {
    layer_forward(ctx, l, x.data(), acts_[size_t(l)]);
    if (opts_.recompute) acts_[size_t(l)].release_all_but_input();
  }
  x_final_ = x;
  std::vector<float> xn(static_cast<size_t>(T * d));
  rmsnorm_forward(xn.data(), x.data(), w.final_norm.data(), T, d, c.rms_eps);

  result_.hidden.assign(opts_.capture.size() * size_t(T * d), 0.f);
  for (size_t i = 0; i < opts_.capture.size(); ++i) {
    const int32_t h = opts_.capture[i];
    const float* src = h == L ? xn.data() : acts_[size_t(h)].x_in.data();
    std::copy(src, src + T * d, result_.hidden.begin() + int64_t(i) * T * d);
  }

  // LM head in row chunks: logits, the loss terms and their d/d(xn), without a [T][V] buffer.
  const int64_t V = c.vocab;
  const bool ce = !opts_.targets.empty();
  dxn_ce_.assign(ce ? size_t(T * d) : 0, 0.f);
  dxn_kl_.assign(kl ? size_t(T * d) : 0, 0.f);
  if (opts_.return_logits) result_.logits.resize(size_t(T * V));
  if (ce || kl || opts_.return_logits) {
    const int64_t chunk = std::min(kHeadChunk, T);
    std::vector<float> logits(size_t(chunk * V)), dlogits, base_logits;
    for (int64_t r0 = 0; r0 < T; r0 += chunk) {
      const int64_t n = std::min(chunk, T - r0);
      linear_forward(logits.data(), xn.data() + r0 * d, w.lm_head, nullptr, n, pool);
      if (opts_.return_logits) std::copy(logits.begin(), logits.begin() + n * V, result_.logits.begin() + r0 * V);
      if (ce) {
        dlogits.assign(size_t(n * V), 0.f);
        result_.ce += rows_parallel(n, [&](int64_t t) {
          const int32_t* y = opts_.targets.data() + r0 + t;
          const float* wt = opts_.ce_weights.data() + r0 + t;
          return cross_entropy_forward_backward(dlogits.data() + t * V, logits.data() + t * V, y, wt, 1, V);
        });
        linear_backward(dxn_ce_.data() + r0 * d, nullptr, nullptr, dlogits.data(), nullptr, w.lm_head, n, pool);
      }
      if (kl) {
        base_logits.resize(size_t(n * V));
        linear_forward(base_logits.data(), xn_base.data() + r0 * d, w.lm_head, nullptr, n, pool);
        dlogits.assign(size_t(n * V), 0.f);
        result_.kl += rows_parallel(n, [&](int64_t t) {
          return kl_forward_backward(dlogits.data() + t * V, base_logits.data() + t * V, logits.data() + t * V,
                                     opts_.kl_weights.data() + r0 + t, 1, V);
        });
        linear_backward(dxn_kl_.data() + r0 * d, nullptr, nullptr, dlogits.data(), nullptr, w.lm_head, n, pool);
      }
    }
  }
  uint64_t bytes = 0;
  for (const auto& a : acts_) bytes += a.bytes();
  result_.activation_bytes = bytes + (x_final_.size() + dxn_ce_.size() + dxn_kl_.size()) * sizeof(float);
  return result_;
}

void TrainPass::backward(float ce_coef, float kl_coef, const std::vector<const float*>& dhidden) {
  if (!forward_done_ || backward_done_) throw Error("ERR_ARGUMENT", "backward runs once, after forward");
  if (dhidden.size() != opts_.capture.size() && !dhidden.empty())
    throw Error("ERR_ARGUMENT", "backward needs one hidden-state gradient (or none) per captured index");
  backward_done_ = true;
  const ModelConfig& c = model_->config();
  const ModelWeights& w = model_->weights();
  ThreadPool& pool = ThreadPool::global();
  const int64_t T = T_, d = c.hidden, L = c.n_layers;
  auto injected = [&](int32_t h) -> const float* {
    for (size_t i = 0; i < dhidden.size(); ++i)
      if (opts_.capture[i] == h) return dhidden[i];
    return nullptr;
  };

  std::vector<float> dxn(static_cast<size_t>(T * d), 0.f);
  if (!dxn_ce_.empty() && ce_coef != 0.f)
    for (int64_t i = 0; i < T * d; ++i) dxn[size_t(i)] += ce_coef * dxn_ce_[size_t(i)];
  if (!dxn_kl_.empty() && kl_coef != 0.f)
    for (int64_t i = 0; i < T * d; ++i) dxn[size_t(i)] += kl_coef * dxn_kl_[size_t(i)];
  if (const float* g = injected(int32_t(L)))
    for (int64_t i = 0; i < T * d; ++i) dxn[size_t(i)] += g[i];
  std::vector<float> dx(static_cast<size_t>(T * d), 0.f);
  rmsnorm_backward(dx.data(), nullptr, dxn.data(), x_final_.data(), w.final_norm.data(), T, d, c.rms_eps);

  const LayerPassContext ctx{c, w, lora_, cos_.data(), sin_.data(), T, pool};
  LayerActivations redo;
  std::vector<float> x;
  for (int64_t l = L - 1; l >= 0; --l) {
    if (l + 1 < L)
      if (const float* g = injected(int32_t(l + 1)))
        for (int64_t i = 0; i < T * d; ++i) dx[size_t(i)] += g[i];
    LayerActivations& a = acts_[size_t(l)];
    if (opts_.recompute) {  // one layer's activations at a time, rebuilt from its input
      x = a.x_in;
      layer_forward(ctx, l, x.data(), redo);
      layer_backward(ctx, l, redo, dx.data());
    } else {
      layer_backward(ctx, l, a, dx.data());
    }
    a = LayerActivations();  // done with this layer
  }
  // dx is now d(loss)/d(embeddings): the embedding table is frozen.
}

}  // namespace dg
