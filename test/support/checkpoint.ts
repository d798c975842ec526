/**
 * Writes tiny random Llama / Qwen2 checkpoints in the exact layout of
 * `save_pretrained`: config.json as transformers writes it, HF tensor names with
 * [out, in] shapes, one model.safetensors or shards plus their index, and
 * optionally a real tokenizer. Values are returned exactly as stored (after
 * dtype rounding) so the float64 reference sees the same weights as the engine.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { decodeTensor, encodeTensor } from "../../lib/io/dtype.js";
import { writeSafetensors } from "../../lib/io/safetensors.js";
import { makeTokenizerFiles } from "./tokenizer-fixture.js";

export interface TinySpec {
  arch: "llama" | "qwen2";
  dtype: "F32" | "F16" | "BF16";
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  vocab: number;
  tie: boolean;
  ropeTheta?: number;
  rmsEps?: number;
  ropeScaling?:
    | { type: "linear"; factor: number }
    | { type: "llama3"; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number }
    | null;
  /** Llama only: biases on q, k, v and o. */
  attentionBias?: boolean;
  headDim?: number;
  maxPositions?: number;
  /** More than 1: model-0000i-of-0000n.safetensors plus model.safetensors.index.json. */
  shards?: number;
  tokenizer?: boolean;
  seed: number;
}

export type TinyWeights = Map<string, { shape: number[]; values: Float64Array }>;

export interface TinyCheckpoint {
  dir: string;
  config: Record<string, unknown>;
  /** Values exactly as stored (after dtype rounding). */
  weights: TinyWeights;
}

/** The largest tokenizer the fixture builds; a larger model vocabulary is padded, as Qwen2's is. */
const TOKENIZER_VOCAB_LIMIT = 512;

const TORCH_DTYPE = { F32: "float32", F16: "float16", BF16: "bfloat16" } as const;

/** End-of-text id: the tokenizer's special token when one is written, else the last id. */
function eosTokenId(spec: TinySpec): number {
  return Math.min(spec.vocab, TOKENIZER_VOCAB_LIMIT) - 1;
}

/** config.json with the keys and defaults transformers writes for LlamaForCausalLM / Qwen2ForCausalLM. */
export function tinyConfig(spec: TinySpec): Record<string, unknown> {
  const eos = eosTokenId(spec);
  const maxPositions = spec.maxPositions ?? 256;
  // transformers copies `type` into `rope_type` when it loads a config, and saves
  // both; Llama 3 style configs carry only rope_type "llama3" and its parameters.
  const r = spec.ropeScaling;
  const ropeScaling = !r
    ? null
    : r.type === "linear"
      ? { factor: r.factor, rope_type: "linear", type: "linear" }
      : {
          factor: r.factor,
          high_freq_factor: r.highFreqFactor,
          low_freq_factor: r.lowFreqFactor,
          original_max_position_embeddings: r.originalMaxPositionEmbeddings,
          rope_type: "llama3",
        };
  const common = {
    attention_dropout: 0.0,
    bos_token_id: eos,
    eos_token_id: eos,
    ...(spec.headDim !== undefined ? { head_dim: spec.headDim } : {}),
    hidden_act: "silu",
    hidden_size: spec.hidden,
    initializer_range: 0.02,
    intermediate_size: spec.intermediate,
    max_position_embeddings: maxPositions,
    num_attention_heads: spec.heads,
    num_hidden_layers: spec.layers,
    num_key_value_heads: spec.kvHeads,
    rms_norm_eps: spec.rmsEps ?? (spec.arch === "qwen2" ? 1e-6 : 1e-5),
    rope_scaling: ropeScaling,
    rope_theta: spec.ropeTheta ?? (spec.arch === "qwen2" ? 1000000.0 : 10000.0),
    tie_word_embeddings: spec.tie,
    torch_dtype: TORCH_DTYPE[spec.dtype],
    transformers_version: "4.46.0",
    use_cache: true,
    vocab_size: spec.vocab,
  };
  const specific =
    spec.arch === "qwen2"
      ? {
          architectures: ["Qwen2ForCausalLM"],
          max_window_layers: spec.layers,
          model_type: "qwen2",
          sliding_window: maxPositions,
          use_sliding_window: false,
        }
      : {
          architectures: ["LlamaForCausalLM"],
          attention_bias: spec.attentionBias ?? false,
          mlp_bias: false,
          model_type: "llama",
          pretraining_tp: 1,
        };
  return sortedKeys<unknown>({ ...common, ...specific });
}

/** A seeded uniform [0, 1) generator (golden-ratio counter through a 32-bit mixer), so every run builds the same checkpoint. */
function seededUniform(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
    z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
    return ((z ^ (z >>> 15)) >>> 0) / 2 ** 32;
  };
}

/** Values are drawn uniformly from center ± radius. */
type Init = { center: number; radius: number };

/**
 * Every parameter with its shape and initial range. Matrices are uniform in
 * ±1/sqrt(in) and norms near 1, so activations stay O(1) through the layers and
 * each weight visibly moves the logits; embeddings are ±1.
 */
function parameterPlan(spec: TinySpec): Array<{ name: string; shape: number[]; init: Init }> {
  const headDim = spec.headDim ?? spec.hidden / spec.heads;
  const qDim = spec.heads * headDim;
  const kvDim = spec.kvHeads * headDim;
  const matrix = (out: number, inDim: number): { shape: number[]; init: Init } => ({
    shape: [out, inDim],
    init: { center: 0, radius: 1 / Math.sqrt(inDim) },
  });
  const norm = { shape: [spec.hidden], init: { center: 1, radius: 0.1 } };
  const bias = (size: number) => ({ shape: [size], init: { center: 0, radius: 0.1 } });
  const qkvBias = spec.arch === "qwen2" || spec.attentionBias === true;

  const plan = [
    { name: "model.embed_tokens.weight", shape: [spec.vocab, spec.hidden], init: { center: 0, radius: 1 } },
  ];
  // State-dict order (it decides which shard a tensor lands in): attention, MLP, then the two norms.
  for (let i = 0; i < spec.layers; i++) {
    const p = `model.layers.${i}`;
    const projection = (module: string, out: number, inDim: number, withBias: boolean) => {
      plan.push({ name: `${p}.${module}.weight`, ...matrix(out, inDim) });
      if (withBias) plan.push({ name: `${p}.${module}.bias`, ...bias(out) });
    };
    projection("self_attn.q_proj", qDim, spec.hidden, qkvBias);
    projection("self_attn.k_proj", kvDim, spec.hidden, qkvBias);
    projection("self_attn.v_proj", kvDim, spec.hidden, qkvBias);
    projection("self_attn.o_proj", spec.hidden, qDim, spec.arch === "llama" && spec.attentionBias === true);
    projection("mlp.gate_proj", spec.intermediate, spec.hidden, false);
    projection("mlp.up_proj", spec.intermediate, spec.hidden, false);
    projection("mlp.down_proj", spec.hidden, spec.intermediate, false);
    plan.push({ name: `${p}.input_layernorm.weight`, ...norm });
    plan.push({ name: `${p}.post_attention_layernorm.weight`, ...norm });
  }
  plan.push({ name: "model.norm.weight", ...norm });
  // Tied models have no lm_head.weight in the file: HF drops the tied copy when saving.
  if (!spec.tie) plan.push({ name: "lm_head.weight", ...matrix(spec.vocab, spec.hidden) });
  return plan;
}

/** Splits names, in state-dict order, into `count` consecutive non-empty groups of about equal length. */
function shardGroups(names: string[], count: number): string[][] {
  if (count > names.length) {
    throw new Error(`cannot split ${names.length} tensors into ${count} non-empty shards`);
  }
  const groups: string[][] = Array.from({ length: count }, () => []);
  names.forEach((name, i) => groups[Math.floor((i * count) / names.length)].push(name));
  return groups;
}

/** transformers writes JSON with sorted keys (json.dumps(sort_keys=True)). */
function sortedKeys<T>(object: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(object).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

export async function writeJson(path: string, value: unknown): Promise<void> {
  await writeFile(path, JSON.stringify(value, null, 2) + "\n");
}

/** Overwrites config.json, e.g. with a broken field for config validation tests. */
export async function writeConfig(dir: string, config: Record<string, unknown>): Promise<void> {
  await writeJson(join(dir, "config.json"), config);
}

export async function makeTinyCheckpoint(dir: string, spec: TinySpec): Promise<TinyCheckpoint> {
  await mkdir(dir, { recursive: true });
  const random = seededUniform(spec.seed);
  const weights: TinyWeights = new Map();
  const stored: Record<string, { dtype: string; shape: number[]; data: Uint8Array }> = {};
  for (const { name, shape, init } of parameterPlan(spec)) {
    const size = shape.reduce((a, b) => a * b, 1);
    const raw = Float64Array.from({ length: size }, () => init.center + init.radius * (2 * random() - 1));
    const data = encodeTensor(raw, spec.dtype);
    stored[name] = { dtype: spec.dtype, shape, data };
    weights.set(name, { shape, values: decodeTensor(data, spec.dtype) });
  }

  const shards = spec.shards ?? 1;
  if (shards <= 1) {
    await writeSafetensors(join(dir, "model.safetensors"), stored, { format: "pt" });
  } else {
    const pad = (n: number) => String(n).padStart(5, "0");
    const weightMap: Record<string, string> = {};
    for (const [index, group] of shardGroups([...weights.keys()], shards).entries()) {
      const file = `model-${pad(index + 1)}-of-${pad(shards)}.safetensors`;
      await writeSafetensors(join(dir, file), Object.fromEntries(group.map((name) => [name, stored[name]])), {
        format: "pt",
      });
      for (const name of group) weightMap[name] = file;
    }
    const totalSize = Object.values(stored).reduce((n, t) => n + t.data.byteLength, 0);
    await writeJson(join(dir, "model.safetensors.index.json"), {
      metadata: { total_size: totalSize },
      weight_map: sortedKeys(weightMap),
    });
  }

  const config = tinyConfig(spec);
  await writeConfig(dir, config);
  if (spec.tokenizer) {
    const files = makeTokenizerFiles(eosTokenId(spec) + 1, spec.maxPositions ?? 256);
    await writeJson(join(dir, "tokenizer.json"), files.tokenizerJson);
    await writeJson(join(dir, "tokenizer_config.json"), files.tokenizerConfig);
  }
  return { dir, config, weights };
}

/**
 * The named matrix the engine is tested on. Sizes are small but uneven
 * (intermediate not a multiple of hidden, vocab not a power of two) so that
 * shape mix-ups fail loudly.
 */
export function tinySpecs(): Record<string, TinySpec> {
  const base = { hidden: 64, layers: 2, heads: 4, intermediate: 96, vocab: 320, tokenizer: false } as const;
  return {
    "qwen2-f32-gqa-tied": { ...base, arch: "qwen2", dtype: "F32", kvHeads: 2, tie: true, tokenizer: true, seed: 1 },
    "qwen2-bf16-tied": { ...base, arch: "qwen2", dtype: "BF16", kvHeads: 4, tie: true, layers: 3, seed: 2 },
    "llama-f32-untied-mha": { ...base, arch: "llama", dtype: "F32", kvHeads: 4, tie: false, tokenizer: true, seed: 3 },
    "llama-bf16-gqa-rope-linear": {
      ...base,
      arch: "llama",
      dtype: "BF16",
      kvHeads: 1,
      tie: false,
      ropeTheta: 500000,
      ropeScaling: { type: "linear", factor: 2 },
      vocab: 512,
      seed: 4,
    },
    // head_dim 16 at theta 500000 puts one frequency pair in each llama3 band
    // for original 64 / (low 1, high 4): wavelengths 6.3 (kept), 32.5 (smoothed), 168+ (stretched).
    "llama-bf16-rope-llama3": {
      ...base,
      arch: "llama",
      dtype: "BF16",
      kvHeads: 2,
      tie: false,
      ropeTheta: 500000,
      ropeScaling: { type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 },
      seed: 11,
    },
    "llama-f16": { ...base, arch: "llama", dtype: "F16", kvHeads: 2, tie: false, layers: 3, seed: 5 },
    "llama-attention-bias": {
      ...base,
      arch: "llama",
      dtype: "F32",
      kvHeads: 2,
      tie: false,
      attentionBias: true,
      seed: 6,
    },
    "llama-head-dim-32": { ...base, arch: "llama", dtype: "F32", kvHeads: 2, tie: true, headDim: 32, seed: 7 },
    "qwen2-sharded": {
      ...base,
      arch: "qwen2",
      dtype: "BF16",
      kvHeads: 2,
      tie: false,
      shards: 3,
      tokenizer: true,
      seed: 8,
    },
  };
}
