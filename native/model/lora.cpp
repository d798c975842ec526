#include "model/lora.h"

namespace dg {
namespace {

const char* const kNames[kNumProjections] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

// [out, in] of a projection in this model.
std::array<int64_t, 2> projection_shape(const ModelConfig& c, Projection p) {
  const int64_t q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  switch (p) {
    case Projection::Q: return {q, c.hidden};
    case Projection::K:
    case Projection::V: return {kv, c.hidden};
    case Projection::O: return {c.hidden, q};
    case Projection::Gate:
    case Projection::Up: return {c.intermediate, c.hidden};
    case Projection::Down: return {c.hidden, c.intermediate};
  }
  return {0, 0};
}

}  // namespace

const char* projection_name(Projection p) { return kNames[int(p)]; }

bool parse_projection(const std::string& name, Projection* out) {
  for (int i = 0; i < kNumProjections; ++i)
    if (name == kNames[i]) {
      *out = Projection(i);
      return true;
    }
  return false;
}

LoraAdapter load_lora(const ModelConfig& c, const LoraSpec& spec, const std::vector<std::string>& files,
                      const std::vector<TensorRef>& tensors) {
  if (spec.rank <= 0) throw Error("ERR_ADAPTER", "LoRA rank must be positive");
  if (spec.targets.empty()) throw Error("ERR_ADAPTER", "LoRA adapter targets no module");
  LoraAdapter a;
  a.spec = spec;
  a.layers.resize(size_t(c.n_layers));
  TensorBinder b(files, tensors, a.storage);

  std::vector<int64_t> layers = spec.layers;
  if (layers.empty())
    for (int64_t i = 0; i < c.n_layers; ++i) layers.push_back(i);
  for (int64_t l : layers) {
    if (l < 0 || l >= c.n_layers)
      throw Error("ERR_ADAPTER", "layers_to_transform names layer " + std::to_string(l) + " of a " +
                                     std::to_string(c.n_layers) + "-layer model");
    for (Projection p : spec.targets) {
      const std::string module = (p == Projection::Gate || p == Projection::Up || p == Projection::Down) ? "mlp" : "self_attn";
      const std::string prefix =
          "base_model.model.model.layers." + std::to_string(l) + "." + module + "." + projection_name(p);
      const auto shape = projection_shape(c, p);
      LoraFactors& f = a.layers[size_t(l)][size_t(p)];
      f.a = b.matrix(prefix + ".lora_A.weight", spec.rank, shape[1]);
      f.b = b.matrix(prefix + ".lora_B.weight", shape[0], spec.rank);
    }
  }
  const std::vector<std::string> unused = b.unused();
  if (!unused.empty())
    throw Error("ERR_ADAPTER", std::to_string(unused.size()) + " adapter tensor(s) are outside the adapter's target_modules " +
                                   "or layers_to_transform, or the model's layers: " + name_list(unused));
  return a;
}

}  // namespace dg
