#include "model/weights.h"

#include <cstring>
#include <unordered_map>

namespace dg {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

class Binder {
 public:
  Binder(const std::vector<std::string>& paths, const std::vector<TensorRef>& tensors, ModelWeights& out)
      : out_(out) {
    for (const auto& p : paths) out_.files.push_back(MappedFile::open(p));
    for (const auto& t : tensors) {
      if (t.file < 0 || size_t(t.file) >= out_.files.size())
        throw Error("ERR_SAFETENSORS", t.name + ": shard index " + std::to_string(t.file) + " out of range");
      by_name_[t.name] = &t;
    }
  }

  bool has(const std::string& name) const { return by_name_.count(name) != 0; }

  Matrix matrix(const std::string& name, int64_t rows, int64_t cols) {
    const TensorRef& t = find(name, {rows, cols});
    return Matrix{bytes(t, dtype_size(t.dtype)), t.dtype, rows, cols};
  }

  std::vector<float> vector(const std::string& name, int64_t n) {
    const TensorRef& t = find(name, {n});
    const void* data = bytes(t, 1);
    std::vector<float> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[size_t(i)] = load_as_f32(data, t.dtype, i);
    return v;
  }

 private:
  const TensorRef& find(const std::string& name, const std::vector<int64_t>& shape) const {
    auto it = by_name_.find(name);
    if (it == by_name_.end()) throw Error("ERR_MISSING_TENSOR", "checkpoint has no tensor " + name);
    const TensorRef& t = *it->second;
    if (!t.unsupported_dtype.empty())
      throw Error("ERR_UNSUPPORTED_DTYPE",
                  name + " has dtype " + t.unsupported_dtype + "; supported: F32, F16, BF16");
    if (t.shape != shape)
      throw Error("ERR_TENSOR_SHAPE",
                  name + " has shape " + shape_str(t.shape) + ", expected " + shape_str(shape));
    uint64_t numel = 1;
    for (int64_t d : shape) numel *= uint64_t(d);
    if (numel * dtype_size(t.dtype) != t.length)
      throw Error("ERR_SAFETENSORS", name + ": byte length " + std::to_string(t.length) +
                                         " does not match shape " + shape_str(shape) + " in " +
                                         dtype_name(t.dtype));
    return t;
  }

  // Kernels read elements with natural alignment; safetensors only guarantees
  // whatever alignment the writer chose, so realign the rare odd tensor.
  const void* bytes(const TensorRef& t, size_t align) {
    const uint8_t* p = out_.files[size_t(t.file)]->slice(t.offset, t.length, t.name);
    out_.parameter_count += t.length / dtype_size(t.dtype);
    if (reinterpret_cast<uintptr_t>(p) % align == 0) return p;
    std::unique_ptr<uint8_t[]> copy(new uint8_t[t.length]);
    std::memcpy(copy.get(), p, t.length);
    out_.realigned.push_back(std::move(copy));
    return out_.realigned.back().get();
  }

  ModelWeights& out_;
  std::unordered_map<std::string, const TensorRef*> by_name_;
};

}  // namespace

ModelWeights load_weights(const ModelConfig& c, const std::vector<std::string>& files,
                          const std::vector<TensorRef>& tensors) {
  c.check();
  ModelWeights w;
  Binder b(files, tensors, w);
  const int64_t d = c.hidden, q_out = c.n_heads * c.head_dim, kv_out = c.n_kv_heads * c.head_dim;

  auto linear = [&](const std::string& prefix, int64_t out, int64_t in, bool bias) {
    Linear l;
    l.w = b.matrix(prefix + ".weight", out, in);
    if (bias) l.bias = b.vector(prefix + ".bias", out);
    return l;
  };

  w.embed = b.matrix("model.embed_tokens.weight", c.vocab, d);
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i);
    LayerWeights L;
    L.input_norm = b.vector(p + ".input_layernorm.weight", d);
    L.post_attention_norm = b.vector(p + ".post_attention_layernorm.weight", d);
    L.q = linear(p + ".self_attn.q_proj", q_out, d, c.qkv_bias);
    L.k = linear(p + ".self_attn.k_proj", kv_out, d, c.qkv_bias);
    L.v = linear(p + ".self_attn.v_proj", kv_out, d, c.qkv_bias);
    L.o = linear(p + ".self_attn.o_proj", d, q_out, c.o_bias);
    L.gate = linear(p + ".mlp.gate_proj", c.intermediate, d, c.mlp_bias);
    L.up = linear(p + ".mlp.up_proj", c.intermediate, d, c.mlp_bias);
    L.down = linear(p + ".mlp.down_proj", d, c.intermediate, c.mlp_bias);
    w.layers.push_back(std::move(L));
  }
  w.final_norm = b.vector("model.norm.weight", d);
  if (c.tie_embeddings) {
    w.lm_head = w.embed;  // HF omits lm_head.weight when tied; a stray copy is ignored
  } else {
    if (!b.has("lm_head.weight"))
      throw Error("ERR_MISSING_TENSOR",
                  "checkpoint has no tensor lm_head.weight and config.json has tie_word_embeddings = false");
    w.lm_head = b.matrix("lm_head.weight", c.vocab, d);
  }
  return w;
}

}  // namespace dg
