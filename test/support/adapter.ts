/**
 * Writes random PEFT LoRA adapter directories for a tiny checkpoint and merges
 * them into its weights (W + scale · B·A in float64) for the reference forward.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { decodeTensor, encodeTensor } from "../../lib/io/dtype.js";
import { writeSafetensors } from "../../lib/io/safetensors.js";
import type { TinyWeights } from "./checkpoint.js";

export interface AdapterSpec {
  rank: number;
  alpha: number;
  targets: string[];
  dtype: "F32" | "BF16";
  layers?: number[];
  rslora?: boolean;
  seed: number;
}

export interface TinyAdapter {
  dir: string;
  config: Record<string, unknown>;
  /** "model.layers.{i}.{module}.{proj}.weight" -> { a: [r][in], b: [out][r] } as stored. */
  factors: Map<string, { a: Float64Array; b: Float64Array; out: number; in: number }>;
  scale: number;
}

function moduleOf(target: string): string {
  return ["gate_proj", "up_proj", "down_proj"].includes(target) ? "mlp" : "self_attn";
}

export async function makeTinyAdapter(dir: string, base: TinyWeights, numLayers: number, spec: AdapterSpec): Promise<TinyAdapter> {
  await mkdir(dir, { recursive: true });
  let x = spec.seed >>> 0 || 1;
  const uniform = () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 4294967296 - 0.5;
  };
  const layers = spec.layers ?? Array.from({ length: numLayers }, (_, i) => i);
  const tensors: Record<string, { dtype: string; shape: number[]; data: Uint8Array }> = {};
  const factors: TinyAdapter["factors"] = new Map();
  for (const l of layers) {
    for (const t of spec.targets) {
      const name = `model.layers.${l}.${moduleOf(t)}.${t}.weight`;
      const [out, inn] = base.get(name)!.shape;
      const aBytes = encodeTensor(Array.from({ length: spec.rank * inn }, () => uniform() / Math.sqrt(inn)), spec.dtype);
      const bBytes = encodeTensor(Array.from({ length: out * spec.rank }, () => uniform()), spec.dtype);
      const prefix = `base_model.model.model.layers.${l}.${moduleOf(t)}.${t}`;
      tensors[`${prefix}.lora_A.weight`] = { dtype: spec.dtype, shape: [spec.rank, inn], data: aBytes };
      tensors[`${prefix}.lora_B.weight`] = { dtype: spec.dtype, shape: [out, spec.rank], data: bBytes };
      factors.set(name, { a: decodeTensor(aBytes, spec.dtype), b: decodeTensor(bBytes, spec.dtype), out, in: inn });
    }
  }
  await writeSafetensors(join(dir, "adapter_model.safetensors"), tensors);
  const config: Record<string, unknown> = {
    peft_type: "LORA",
    task_type: "CAUSAL_LM",
    r: spec.rank,
    lora_alpha: spec.alpha,
    lora_dropout: 0.05,
    target_modules: spec.targets,
    bias: "none",
    base_model_name_or_path: "tiny-random",
    fan_in_fan_out: false,
    modules_to_save: null,
    use_rslora: spec.rslora ?? false,
    layers_to_transform: spec.layers ?? null,
    rank_pattern: {},
    alpha_pattern: {},
  };
  await writeFile(join(dir, "adapter_config.json"), JSON.stringify(config, null, 2));
  const scale = spec.rslora ? spec.alpha / Math.sqrt(spec.rank) : spec.alpha / spec.rank;
  return { dir, config, factors, scale };
}

/** Base weights with every adapted projection replaced by W + scale · B·A. */
export function mergeAdapter(base: TinyWeights, adapter: TinyAdapter, rank: number): TinyWeights {
  const merged: TinyWeights = new Map(base);
  for (const [name, f] of adapter.factors) {
    const w = Float64Array.from(base.get(name)!.values);
    for (let o = 0; o < f.out; o++)
      for (let i = 0; i < f.in; i++) {
        let s = 0;
        for (let r = 0; r < rank; r++) s += f.b[o * rank + r] * f.a[r * f.in + i];
        w[o * f.in + i] += adapter.scale * s;
      }
    merged.set(name, { shape: [f.out, f.in], values: w });
  }
  return merged;
}
