#include "model/weights.h"

namespace dg {

ModelWeights load_weights(const ModelConfig& c, const std::vector<std::string>& files,
                          const std::vector<TensorRef>& tensors, MappedFile::Mode mode) {
  c.check();
  ModelWeights w;
  TensorBinder b(files, tensors, w.storage, mode);
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
      throw Error("ERR_MISSING_TENSOR", "no tensor lm_head.weight, and config.json has tie_word_embeddings = false");
    w.lm_head = b.matrix("lm_head.weight", c.vocab, d);
  }
  // Every tensor must be used: leftovers mean the config does not describe the
  // checkpoint. Exceptions: rotary inv_freq buffers older exports include, and
  // a tied lm_head.weight (HF ignores it too).
  std::vector<std::string> unused;
  for (const std::string& name : b.unused()) {
    const std::string suffix = ".rotary_emb.inv_freq";
    const bool rope_buffer = name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    if (!rope_buffer && !(c.tie_embeddings && name == "lm_head.weight")) unused.push_back(name);
  }
  if (!unused.empty())
    throw Error("ERR_CHECKPOINT", std::to_string(unused.size()) + " checkpoint tensor(s) are not used by config.json (" +
                                      std::to_string(c.n_layers) + " layers): " + name_list(unused) +
                                      "; does num_hidden_layers (or another field) match the weights?");
  return w;
}

}  // namespace dg
