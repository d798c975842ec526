/**
 * Writes a random Qwen2-shaped checkpoint for benchmarks (not a fixture: it is
 * generated on demand and cached outside the repository).
 */
import { mkdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { encodeTensor } from "../../lib/io/dtype.js";
import { writeSafetensors } from "../../lib/io/safetensors.js";

/** Where benchmarks keep their random checkpoints (DEEPGUARD_BENCH_CACHE, default ~/.cache/deepguard/bench). */
export const BENCH_CACHE_DIR = process.env.DEEPGUARD_BENCH_CACHE ?? join(homedir(), ".cache", "deepguard", "bench");

export interface BenchShape {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  vocab: number;
}

/** Benchmark shapes (Qwen2 block with GQA and q/k/v biases, tied embeddings). */
export const BENCH_SHAPES = {
  /** ~98M parameters: the default, quick to create and run. */
  "100m": { hidden: 768, layers: 12, heads: 12, kvHeads: 2, intermediate: 2048, vocab: 32000 },
  /** Qwen2.5-Coder-0.5B's dimensions (~494M parameters, ~1 GB in BF16). */
  "0.5b": { hidden: 896, layers: 24, heads: 14, kvHeads: 2, intermediate: 4864, vocab: 151936 },
  /** Qwen2.5-Coder-1.5B's dimensions (~1.54B parameters, ~3.1 GB in BF16). */
  "1.5b": { hidden: 1536, layers: 28, heads: 12, kvHeads: 2, intermediate: 8960, vocab: 151936 },
} satisfies Record<string, BenchShape>;
export type BenchShapeName = keyof typeof BENCH_SHAPES;

function randomValues(n: number, scale: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = ((x >>> 0) / 4294967296 - 0.5) * 2 * scale;
  }
  return out;
}

export function tensorShapes(s: BenchShape): Map<string, number[]> {
  const hd = s.hidden / s.heads;
  const m = new Map<string, number[]>([["model.embed_tokens.weight", [s.vocab, s.hidden]]]);
  for (let i = 0; i < s.layers; i++) {
    const p = `model.layers.${i}`;
    m.set(`${p}.input_layernorm.weight`, [s.hidden]);
    m.set(`${p}.post_attention_layernorm.weight`, [s.hidden]);
    m.set(`${p}.self_attn.q_proj.weight`, [s.heads * hd, s.hidden]);
    m.set(`${p}.self_attn.q_proj.bias`, [s.heads * hd]);
    m.set(`${p}.self_attn.k_proj.weight`, [s.kvHeads * hd, s.hidden]);
    m.set(`${p}.self_attn.k_proj.bias`, [s.kvHeads * hd]);
    m.set(`${p}.self_attn.v_proj.weight`, [s.kvHeads * hd, s.hidden]);
    m.set(`${p}.self_attn.v_proj.bias`, [s.kvHeads * hd]);
    m.set(`${p}.self_attn.o_proj.weight`, [s.hidden, s.heads * hd]);
    m.set(`${p}.mlp.gate_proj.weight`, [s.intermediate, s.hidden]);
    m.set(`${p}.mlp.up_proj.weight`, [s.intermediate, s.hidden]);
    m.set(`${p}.mlp.down_proj.weight`, [s.hidden, s.intermediate]);
  }
  m.set("model.norm.weight", [s.hidden]);
  return m;
}

/** Creates dir (if absent) with config.json + model.safetensors; returns dir. */
export async function ensureRandomCheckpoint(dir: string, shape: BenchShape, dtype: "F32" | "BF16"): Promise<string> {
  const done = join(dir, "model.safetensors");
  if (await stat(done).then(() => true, () => false)) return dir;
  process.stderr.write(`creating a random ${dtype} checkpoint in ${dir} (once; cached for later runs)\n`);
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  const tensors: Record<string, { dtype: string; shape: number[]; data: Uint8Array }> = {};
  let seed = 1;
  for (const [name, dims] of tensorShapes(shape)) {
    const n = dims.reduce((a, b) => a * b, 1);
    const isNorm = name.endsWith("layernorm.weight") || name === "model.norm.weight";
    const values = isNorm ? new Float32Array(n).fill(1) : randomValues(n, 1 / Math.sqrt(dims[dims.length - 1]), seed++);
    tensors[name] = { dtype, shape: dims, data: encodeTensor(values, dtype) };
  }
  await writeSafetensors(join(tmp, "model.safetensors"), tensors);
  const config = {
    architectures: ["Qwen2ForCausalLM"],
    model_type: "qwen2",
    hidden_size: shape.hidden,
    intermediate_size: shape.intermediate,
    num_hidden_layers: shape.layers,
    num_attention_heads: shape.heads,
    num_key_value_heads: shape.kvHeads,
    vocab_size: shape.vocab,
    max_position_embeddings: 32768,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000,
    tie_word_embeddings: true,
    hidden_act: "silu",
    use_sliding_window: false,
    torch_dtype: dtype === "F32" ? "float32" : "bfloat16",
  };
  await writeFile(join(tmp, "config.json"), JSON.stringify(config, null, 2));
  await rm(dir, { recursive: true, force: true });
  await rename(tmp, dir);
  return dir;
}
