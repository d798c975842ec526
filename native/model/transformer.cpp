#include "model/transformer.h"

#include <cmath>
#include <cstring>
#include <initializer_list>
#include <string>
#include <unordered_set>

#include "kernels/ops.h"

namespace dg {

Session::Session(const Transformer& model) : model_(&model), cache_(model.config(), model.kv_dtype()) {}

void Session::truncate(int64_t n) {
  if (n < 0 || n > cache_.length())
    throw Error("ERR_ARGUMENT", "cannot truncate a session of length " + std::to_string(cache_.length()) +
                                    " to " + std::to_string(n));
  cache_.set_length(n);
}

void Session::copy_from(const Session& other) {
  if (other.model_ != model_) throw Error("ERR_ARGUMENT", "cannot copy a session of another model");
  if (&other == this) return;
  if (busy_.load() || other.busy_.load()) throw Error("ERR_SESSION_BUSY", "cannot copy a session while a step uses it");
  cache_ = other.cache_;
}

Transformer::Transformer(ModelConfig cfg, ModelWeights weights, DType kv_dtype, bool bf16_activations)
    : cfg_(std::move(cfg)), w_(std::move(weights)), kv_dtype_(kv_dtype), bf16_activations_(bf16_activations) {
  if (kv_dtype != DType::F32 && kv_dtype != DType::BF16)
    throw Error("ERR_ARGUMENT", std::string("the KV cache dtype must be F32 or BF16, not ") + dtype_name(kv_dtype));
}

namespace {

// Marks sessions busy for the duration of a step; releases on every exit path.
class BusyGuard {
 public:
  void acquire(std::atomic<bool>& flag) {
    bool expected = false;
    if (!flag.compare_exchange_strong(expected, true))
      throw Error("ERR_SESSION_BUSY", "a session was used by two concurrent steps; await the first");
    flags_.push_back(&flag);
  }
  ~BusyGuard() {
    for (auto* f : flags_) f->store(false);
  }

 private:
  std::vector<std::atomic<bool>*> flags_;
};

}  // namespace

std::vector<SegmentOutput> Transformer::step(const std::vector<StepSegment>& segs, const StepOptions& opts) const {
  if (segs.empty()) throw Error("ERR_ARGUMENT", "step needs at least one sequence");
  for (size_t i = 0; i < opts.capture.size(); ++i) {
    const int32_t c = opts.capture[i];
    if (c < 0 || c > cfg_.n_layers)
      throw Error("ERR_ARGUMENT", "hidden-state index " + std::to_string(c) + " is out of range [0, " +
                                      std::to_string(cfg_.n_layers) + "]");
    if (i > 0 && c <= opts.capture[i - 1])
      throw Error("ERR_ARGUMENT", "hidden-state indices must be ascending and unique");
  }
  std::unordered_set<const Session*> seen;
  for (size_t s = 0; s < segs.size(); ++s) {
    const StepSegment& seg = segs[s];
    if (!seg.session || seg.session->model() != this)
      throw Error("ERR_ARGUMENT", "sequence " + std::to_string(s) + " belongs to another model");
    if (!seen.insert(seg.session).second)
      throw Error("ERR_ARGUMENT", "the same session appears twice in one batched step");
    if (seg.n <= 0) throw Error("ERR_ARGUMENT", "sequence " + std::to_string(s) + " has no tokens");
    for (int64_t t = 0; t < seg.n; ++t) {
      const int32_t id = seg.tokens[t];
      if (id < 0 || id >= cfg_.vocab)
        throw Error("ERR_TOKEN_ID", "token id " + std::to_string(id) + " at position " + std::to_string(t) +
                                        (segs.size() > 1 ? " of sequence " + std::to_string(s) : "") +
                                        " is out of range [0, " + std::to_string(cfg_.vocab) + ")");
    }
  }
  BusyGuard busy;
  for (const auto& seg : segs) busy.acquire(seg.session->busy_);
  const std::shared_ptr<const LoraAdapter> adapter = opts.use_adapter ? this->adapter() : nullptr;

  std::vector<SegmentOutput> out(segs.size());
  for (size_t s = 0; s < segs.size(); ++s) {
    const int64_t rows = opts.logits == LogitsMode::All ? segs[s].n : opts.logits == LogitsMode::Last ? 1 : 0;
    out[s].logits.resize(size_t(rows * cfg_.vocab));
    out[s].hidden.resize(opts.capture.size() * size_t(segs[s].n * cfg_.hidden));
  }

  // Pack segments into passes of at most kMaxRowsPerPass rows; a long segment
  // is split into full-size chunks, so a session occurs at most once per pass.
  std::vector<Piece> pass;
  int64_t pass_rows = 0;
  for (size_t s = 0; s < segs.size(); ++s) {
    for (int64_t r0 = 0; r0 < segs[s].n; r0 += kMaxRowsPerPass) {
      const int64_t n = std::min(kMaxRowsPerPass, segs[s].n - r0);
      if (pass_rows + n > kMaxRowsPerPass) {
        run_pass(segs, pass, opts, adapter.get(), out);
        pass.clear();
        pass_rows = 0;
      }
      pass.push_back({s, r0, n});
      pass_rows += n;
    }
  }
  run_pass(segs, pass, opts, adapter.get(), out);
  return out;
}

void Transformer::run_pass(const std::vector<StepSegment>& segs, const std::vector<Piece>& pieces,
                           const StepOptions& opts, const LoraAdapter* adapter,
                           std::vector<SegmentOutput>& out) const {
  ThreadPool& pool = ThreadPool::global();
  const ModelConfig& c = cfg_;
  const int64_t d = c.hidden, hd = c.head_dim, half = hd / 2;
  const int64_t q_out = c.n_heads * hd, kv_out = c.n_kv_heads * hd;

  std::vector<int64_t> row0(pieces.size()), pos0(pieces.size());
  int64_t R = 0;
  for (size_t p = 0; p < pieces.size(); ++p) {
    row0[p] = R;
    pos0[p] = segs[pieces[p].segment].session->cache_.length();
    R += pieces[p].n;
  }

  std::vector<int32_t> tokens(static_cast<size_t>(R));
  std::vector<double> positions(static_cast<size_t>(R));
  for (size_t p = 0; p < pieces.size(); ++p) {
    const Piece& pc = pieces[p];
    Session* s = segs[pc.segment].session;
    s->cache_.reserve(pos0[p] + pc.n);
    for (int64_t j = 0; j < pc.n; ++j) {
      tokens[size_t(row0[p] + j)] = segs[pc.segment].tokens[pc.row0_in_segment + j];
      positions[size_t(row0[p] + j)] = double(pos0[p] + j);
    }
  }

  std::vector<float> x(size_t(R * d)), xn(size_t(R * d));
  std::vector<float> q(size_t(R * q_out)), k(size_t(R * kv_out)), v(size_t(R * kv_out)), att(size_t(R * q_out));
  std::vector<float> gate(size_t(R * c.intermediate)), up(size_t(R * c.intermediate));
  std::vector<float> cos_t(size_t(R * half)), sin_t(size_t(R * half));
  rope_tables(cos_t.data(), sin_t.data(), positions.data(), R, c.rope_inv_freq.data(), half);

  // Copies rows of `state` into each segment's capture slot for hidden index idx.
  auto capture = [&](int32_t idx, const float* state) {
    for (size_t ci = 0; ci < opts.capture.size(); ++ci) {
      if (opts.capture[ci] != idx) continue;
      for (size_t p = 0; p < pieces.size(); ++p) {
        const Piece& pc = pieces[p];
        float* dst = out[pc.segment].hidden.data() + (ci * size_t(segs[pc.segment].n) + size_t(pc.row0_in_segment)) * size_t(d);
        std::memcpy(dst, state + row0[p] * d, size_t(pc.n * d) * sizeof(float));
      }
    }
  };

  // Projections that share an input run as one pool dispatch (y = or += x W^T
  // + b); then each adds its adapter's scale * (x A^T) B^T, if it has one.
  struct Proj {
    float* y;
    const Linear& lin;
    Projection p;
    bool accumulate;
  };
  std::vector<float> lora_tmp;
  auto project = [&](std::initializer_list<Proj> projs, const float* in, int64_t layer) {
    LinearOutput outs[3];
    int n = 0;
    for (const Proj& j : projs) outs[n++] = {j.y, j.lin.w, j.lin.bias_ptr(), j.accumulate};
    linear_forward_many(outs, n, in, R, pool, bf16_activations_);
    for (const Proj& j : projs) {
      const LoraFactors* f = adapter ? adapter->factors(layer, j.p) : nullptr;
      if (!f) continue;
      lora_tmp.resize(size_t(R * f->a.rows));
      linear_forward(lora_tmp.data(), in, f->a, nullptr, R, pool);
      for (float& t : lora_tmp) t *= adapter->spec.scale;
      linear_forward(j.y, lora_tmp.data(), f->b, nullptr, R, pool, /*accumulate=*/true);
    }
  };

  embedding_forward(x.data(), tokens.data(), R, w_.embed);
  capture(0, x.data());

  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w_.layers[size_t(l)];
    // Attention block: x += o_proj(attn(rope(q), rope(k), v)) on rmsnorm(x).
    rmsnorm_forward(xn.data(), x.data(), L.input_norm.data(), R, d, c.rms_eps);
    project({{q.data(), L.q, Projection::Q, false}, {k.data(), L.k, Projection::K, false},
             {v.data(), L.v, Projection::V, false}},
            xn.data(), l);
    rope_forward(q.data(), cos_t.data(), sin_t.data(), R, c.n_heads, hd);
    rope_forward(k.data(), cos_t.data(), sin_t.data(), R, c.n_kv_heads, hd);
    for (size_t p = 0; p < pieces.size(); ++p) {
      KvCache& cache = segs[pieces[p].segment].session->cache_;
      cache.write(l, k.data() + row0[p] * kv_out, v.data() + row0[p] * kv_out, pos0[p], pieces[p].n);
      attention_forward(att.data() + row0[p] * q_out, q.data() + row0[p] * q_out, cache.keys(l), cache.values(l),
                        cache.capacity(), pieces[p].n, pos0[p], c.n_heads, c.n_kv_heads, hd, pool, cache.dtype());
    }
    project({{x.data(), L.o, Projection::O, /*accumulate=*/true}}, att.data(), l);

    // MLP block: x += down(silu(gate(x)) * up(x)) on rmsnorm(x).
    rmsnorm_forward(xn.data(), x.data(), L.post_attention_norm.data(), R, d, c.rms_eps);
    project({{gate.data(), L.gate, Projection::Gate, false}, {up.data(), L.up, Projection::Up, false}}, xn.data(), l);
    // Elementwise, but an exp per element: worth the pool (~1M per 512-row prefill pass).
    const int64_t I = c.intermediate;
    pool.parallel_for(R, [&](int64_t t0, int64_t t1) {
      swiglu_forward(gate.data() + t0 * I, gate.data() + t0 * I, up.data() + t0 * I, (t1 - t0) * I);
    }, std::max<int64_t>(1, 8192 / std::max<int64_t>(I, 1)));
    project({{x.data(), L.down, Projection::Down, /*accumulate=*/true}}, gate.data(), l);

    if (l + 1 < c.n_layers) capture(int32_t(l + 1), x.data());
  }
  rmsnorm_forward(xn.data(), x.data(), w_.final_norm.data(), R, d, c.rms_eps);
  capture(int32_t(c.n_layers), xn.data());

  if (opts.logits == LogitsMode::All) {
    for (size_t p = 0; p < pieces.size(); ++p) {
      float* dst = out[pieces[p].segment].logits.data() + pieces[p].row0_in_segment * c.vocab;
      linear_forward(dst, xn.data() + row0[p] * d, w_.lm_head, nullptr, pieces[p].n, pool, false, bf16_activations_);
    }
  } else if (opts.logits == LogitsMode::Last) {
    // Gather the final row of every segment that ends in this pass, so a batched
    // decode reads the (large) lm_head once for all sequences.
    std::vector<size_t> ending;
    for (size_t p = 0; p < pieces.size(); ++p)
      if (pieces[p].row0_in_segment + pieces[p].n == segs[pieces[p].segment].n) ending.push_back(p);
    std::vector<float> last(ending.size() * size_t(d)), logits(ending.size() * size_t(c.vocab));
    for (size_t e = 0; e < ending.size(); ++e) {
      const size_t p = ending[e];
      std::memcpy(&last[e * size_t(d)], xn.data() + (row0[p] + pieces[p].n - 1) * d, size_t(d) * sizeof(float));
    }
    if (!ending.empty()) {
      linear_forward(logits.data(), last.data(), w_.lm_head, nullptr, int64_t(ending.size()), pool, false,
                     bf16_activations_);
      for (size_t e = 0; e < ending.size(); ++e)
        std::memcpy(out[pieces[ending[e]].segment].logits.data(), &logits[e * size_t(c.vocab)],
                    size_t(c.vocab) * sizeof(float));
    }
  }

  for (size_t p = 0; p < pieces.size(); ++p)
    segs[pieces[p].segment].session->cache_.set_length(pos0[p] + pieces[p].n);
}

}  // namespace dg
