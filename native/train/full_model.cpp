#include "train/full_model.h"

#include <algorithm>
#include <cstring>

#include "core/thread_pool.h"
#include "kernels/ops.h"
#include "model/layer_train.h"
#include "train/full_layer.h"

namespace dg {
namespace {

constexpr int64_t kHeadChunk = 128;  // LM-head rows per chunk: bounds the [rows][V] logits buffers

}  // namespace

FullModel::FullModel(ModelConfig cfg, bool bf16_compute) : cfg_(std::move(cfg)), bf16_(bf16_compute) {
  cfg_.check();
  const ModelConfig& c = cfg_;
  const int64_t d = c.hidden, hd = c.head_dim, qo = c.n_heads * hd, kvo = c.n_kv_heads * hd, I = c.intermediate;
  w_.layers.resize(size_t(c.n_layers));
  // 1-D tensors: the ModelWeights vectors ARE the masters (sized once, never reallocated).
  auto vec = [&](std::vector<float>& v, int64_t n, float init) {
    v.assign(size_t(n), init);
    return v.data();
  };
  params_.reserve(size_t(4 + c.n_layers * 16));
  add_param("model.embed_tokens.weight", {c.vocab, d}, nullptr, true);
  embed_ = 0;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    LayerWeights& L = w_.layers[size_t(l)];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerIdx ix{};
    auto mat = [&](const std::string& name, int64_t rows, int64_t cols) {
      add_param(p + name + ".weight", {rows, cols}, nullptr, true);
      return int(params_.size() - 1);
    };
    auto one = [&](const std::string& name, std::vector<float>& v, int64_t n, float init) {
      add_param(p + name, {n}, vec(v, n, init), false);
      return int(params_.size() - 1);
    };
    auto bias = [&](bool on, const std::string& name, std::vector<float>& v, int64_t n) {
      return on ? one(name + ".bias", v, n, 0.f) : -1;
    };
    ix.in_norm = one("input_layernorm.weight", L.input_norm, d, 1.f);
    ix.q = mat("self_attn.q_proj", qo, d);
    ix.qb = bias(c.qkv_bias, "self_attn.q_proj", L.q.bias, qo);
    ix.k = mat("self_attn.k_proj", kvo, d);
    ix.kb = bias(c.qkv_bias, "self_attn.k_proj", L.k.bias, kvo);
    ix.v = mat("self_attn.v_proj", kvo, d);
    ix.vb = bias(c.qkv_bias, "self_attn.v_proj", L.v.bias, kvo);
    ix.o = mat("self_attn.o_proj", d, qo);
    ix.ob = bias(c.o_bias, "self_attn.o_proj", L.o.bias, d);
    ix.post_norm = one("post_attention_layernorm.weight", L.post_attention_norm, d, 1.f);
    ix.gate = mat("mlp.gate_proj", I, d);
    ix.gateb = bias(c.mlp_bias, "mlp.gate_proj", L.gate.bias, I);
    ix.up = mat("mlp.up_proj", I, d);
    ix.upb = bias(c.mlp_bias, "mlp.up_proj", L.up.bias, I);
    ix.down = mat("mlp.down_proj", d, I);
    ix.downb = bias(c.mlp_bias, "mlp.down_proj", L.down.bias, d);
    idx_.push_back(ix);
  }
  add_param("model.norm.weight", {d}, vec(w_.final_norm, d, 1.f), false);
  final_norm_ = int(params_.size() - 1);
  if (!c.tie_embeddings) {
    add_param("lm_head.weight", {c.vocab, d}, nullptr, true);
    lm_head_ = int(params_.size() - 1);
  }
  // Views: matrices in the order they were added (compute_ index = order among matrices).
  std::vector<size_t> mi(params_.size(), 0);
  size_t n_mat = 0;
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].matrix) mi[i] = n_mat++;
  if (bf16_) {
    compute_.resize(n_mat);
    for (size_t i = 0; i < params_.size(); ++i)
      if (params_[i].matrix) compute_[mi[i]].assign(size_t(params_[i].size), 0);
  }
  auto V = [&](int i) { return view(params_[size_t(i)], mi[size_t(i)]); };
  w_.embed = V(embed_);
  w_.lm_head = c.tie_embeddings ? w_.embed : V(lm_head_);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    LayerWeights& L = w_.layers[size_t(l)];
    const LayerIdx& ix = idx_[size_t(l)];
    L.q.w = V(ix.q);
    L.k.w = V(ix.k);
    L.v.w = V(ix.v);
    L.o.w = V(ix.o);
    L.gate.w = V(ix.gate);
    L.up.w = V(ix.up);
    L.down.w = V(ix.down);
  }
  refresh_compute();
}

void FullModel::add_param(const std::string& name, std::vector<int64_t> shape, float* external, bool matrix) {
  FullParam p;
  p.name = name;
  p.size = 1;
  for (int64_t s : shape) p.size *= s;
  p.shape = std::move(shape);
  p.matrix = matrix;
  if (external) {
    p.data = external;
  } else {
    owned_.emplace_back(new float[size_t(p.size)]());
    p.data = owned_.back().get();
  }
  owned_.emplace_back(new float[size_t(p.size)]());
  p.grad = owned_.back().get();
  params_.push_back(std::move(p));
}

Matrix FullModel::view(const FullParam& p, size_t matrix_index) const {
  Matrix m;
  m.rows = p.shape[0];
  m.cols = p.shape[1];
  if (bf16_) {
    m.data = compute_[matrix_index].data();
    m.dtype = DType::BF16;
  } else {
    m.data = p.data;
    m.dtype = DType::F32;
  }
  return m;
}

uint64_t FullModel::parameter_count() const {
  uint64_t n = 0;
  for (const FullParam& p : params_) n += uint64_t(p.size);
  return n;
}

void FullModel::refresh_compute() {
  if (!bf16_) return;
  size_t k = 0;
  for (const FullParam& p : params_) {
    if (!p.matrix) continue;
    uint16_t* dst = compute_[k++].data();
    const float* src = p.data;
    ThreadPool::global().parallel_for(p.size, [&](int64_t a, int64_t b) {
      for (int64_t i = a; i < b; ++i) dst[i] = f32_to_bf16(src[i]);
    });
  }
}

FullStepResult FullModel::step(const int32_t* rows, int64_t B, int64_t T1, bool train) {
  if (B < 1 || T1 < 2) throw Error("ERR_ARGUMENT", "a training batch needs at least one row of at least 2 tokens");
  for (int64_t i = 0; i < B * T1; ++i)
    if (rows[i] < 0 || rows[i] >= cfg_.vocab)
      throw Error("ERR_TOKEN_ID", "token id " + std::to_string(rows[i]) + " at row " + std::to_string(i / T1) +
                                      ", position " + std::to_string(i % T1) + " is out of range [0, " +
                                      std::to_string(cfg_.vocab) + ")");
  if (train)
    for (FullParam& p : params_) std::memset(p.grad, 0, size_t(p.size) * sizeof(float));
  const int64_t T = T1 - 1;
  FullStepResult r;
  r.targets = B * T;
  const float inv = 1.f / float(r.targets);
  for (int64_t b = 0; b < B; ++b) r.loss_sum += sequence(rows + b * T1, T, inv, train, nullptr);
  return r;
}

std::vector<float> FullModel::logits(const int32_t* ids, int64_t T) {
  if (T < 1) throw Error("ERR_ARGUMENT", "logits need at least one token");
  for (int64_t i = 0; i < T; ++i)
    if (ids[i] < 0 || ids[i] >= cfg_.vocab) throw Error("ERR_TOKEN_ID", "token id " + std::to_string(ids[i]) + " is out of range");
  std::vector<float> out;
  sequence(ids, T, 0.f, false, &out);
  return out;
}

// One causal segment ids[0..T) (targets ids[1..T] unless logits_out is given).
// Returns the summed CE; with train, adds d(inv_count * CE sum)/d(param) to every gradient.
double FullModel::sequence(const int32_t* ids, int64_t T, float inv_count, bool train, std::vector<float>* logits_out) {
  const ModelConfig& c = cfg_;
  ThreadPool& pool = ThreadPool::global();
  const int64_t d = c.hidden, L = c.n_layers, V = c.vocab, half = c.head_dim / 2;
  std::vector<float> cos_t(size_t(T * half)), sin_t(size_t(T * half));
  std::vector<double> pos(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) pos[size_t(t)] = double(t);
  rope_tables(cos_t.data(), sin_t.data(), pos.data(), T, c.rope_inv_freq.data(), half);

  std::vector<float> x(static_cast<size_t>(T * d));
  embedding_forward(x.data(), ids, T, w_.embed);
  const LayerPassContext ctx{c, w_, nullptr, cos_t.data(), sin_t.data(), T, pool};
  std::vector<LayerActivations> acts(size_t(train ? L : 1));
  for (int64_t l = 0; l < L; ++l) layer_forward(ctx, l, x.data(), acts[train ? size_t(l) : 0]);
  std::vector<float> xn(static_cast<size_t>(T * d));
  rmsnorm_forward(xn.data(), x.data(), w_.final_norm.data(), T, d, c.rms_eps);

  const int32_t* targets = ids + 1;
  const bool loss = logits_out == nullptr;
  float* dhead = c.tie_embeddings ? params_[size_t(embed_)].grad : (train ? params_[size_t(lm_head_)].grad : nullptr);
  std::vector<float> dxn(train ? size_t(T * d) : 0, 0.f);
  if (logits_out) logits_out->resize(size_t(T * V));
  const int64_t chunk = std::min(kHeadChunk, T);
  std::vector<float> logits(size_t(chunk * V)), dlogits(train ? size_t(chunk * V) : 0);
  std::vector<double> part(static_cast<size_t>(chunk));
  double total = 0.0;
  for (int64_t r0 = 0; r0 < T; r0 += chunk) {
    const int64_t n = std::min(chunk, T - r0);
    linear_forward(logits.data(), xn.data() + r0 * d, w_.lm_head, nullptr, n, pool);
    if (logits_out) std::copy(logits.begin(), logits.begin() + n * V, logits_out->begin() + r0 * V);
    if (!loss) continue;
    pool.parallel_for(n, [&](int64_t a, int64_t b) {
      const float one = 1.f;
      std::vector<float> lse(1);
      for (int64_t t = a; t < b; ++t) {
        const float* lg = logits.data() + t * V;
        if (!train) {
          part[size_t(t)] = cross_entropy_forward(lse.data(), lg, targets + r0 + t, &one, 1, V);
          continue;
        }
        float* dl = dlogits.data() + t * V;
        part[size_t(t)] = cross_entropy_forward_backward(dl, lg, targets + r0 + t, &one, 1, V);
        for (int64_t i = 0; i < V; ++i) dl[i] *= inv_count;
      }
    });
    for (int64_t t = 0; t < n; ++t) total += part[size_t(t)];
    if (train) linear_backward(dxn.data() + r0 * d, dhead, nullptr, dlogits.data(), xn.data() + r0 * d, w_.lm_head, n, pool);
  }
  if (!train) return total;

  std::vector<float> dx(static_cast<size_t>(T * d), 0.f);
  rmsnorm_backward(dx.data(), params_[size_t(final_norm_)].grad, dxn.data(), x.data(), w_.final_norm.data(), T, d,
                   c.rms_eps);
  auto G = [&](int i) { return i < 0 ? nullptr : params_[size_t(i)].grad; };
  for (int64_t l = L - 1; l >= 0; --l) {
    const LayerIdx& ix = idx_[size_t(l)];
    const LayerGrads g{G(ix.in_norm), G(ix.post_norm), G(ix.q),  G(ix.k),  G(ix.v),     G(ix.o),   G(ix.gate), G(ix.up),
                       G(ix.down),    G(ix.qb),        G(ix.kb), G(ix.vb), G(ix.ob), G(ix.gateb), G(ix.upb), G(ix.downb)};
    full_layer_backward(ctx, l, acts[size_t(l)], dx.data(), g);
    acts[size_t(l)] = LayerActivations();
  }
  embedding_backward(params_[size_t(embed_)].grad, dx.data(), ids, T, d);
  return total;
}

}  // namespace dg
