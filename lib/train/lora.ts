/**
 * Trainable LoRA factors for the frozen base: f32 Float32Arrays owned here, named
 * exactly as PEFT saves them (`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`
 * [r, in], `...lora_B.weight` [out, r]), updated in place by AdamW. Each native
 * training pass borrows them by reference (no copy); see native/model/lora_train.h.
 *
 * Saved as a PEFT adapter directory (adapter_config.json + adapter_model.safetensors),
 * which Model.loadAdapter and Hugging Face PEFT load back.
 */
import { mkdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { z } from "zod";
import { readAdapter, LORA_TARGETS, type LoraTarget } from "../model/adapter.js";
import { engineOf, type Model } from "../model/model.js";
import { DeepGuardError, wrapNativeError } from "../errors.js";
import { writeFileAtomic } from "../io/atomic.js";
import { f32Bytes, decodeTensor } from "../io/dtype.js";
import { readSafetensorsHeader, readTensorData, writeSafetensors } from "../io/safetensors.js";
import { native } from "../native.js";
import type { NativeLoraTrainSpec, NativeTrainPass } from "../native-types.js";
import { Random } from "../random.js";
import { parseOptions } from "../validate.js";

export interface LoraOptions {
  /** Rank r of the factors (default 16). */
  rank?: number;
  /** lora_alpha (default 2 * rank): the update is scaled by alpha / r (alpha / sqrt(r) with rsLoRA). */
  alpha?: number;
  /** Dropout on the LoRA input while training (default 0). */
  dropout?: number;
  /** Projections to adapt (default q_proj and v_proj, as PEFT's default for Llama/Qwen2). */
  targetModules?: LoraTarget[];
  /** Layers to adapt (PEFT layers_to_transform); default all. */
  layers?: number[];
  /** rsLoRA scaling alpha / sqrt(r) (default false). */
  rslora?: boolean;
}

export const loraSchema = z
  .object({
    rank: z.number().int().positive().max(4096).default(16),
    alpha: z.number().positive().finite().optional(),
    dropout: z.number().min(0).lt(1).default(0),
    targetModules: z.array(z.enum(LORA_TARGETS)).min(1).default(["q_proj", "v_proj"]),
    layers: z.array(z.number().int().nonnegative()).min(1).optional(),
    rslora: z.boolean().default(false),
  })
  .strict();

function moduleOf(t: LoraTarget): string {
  return t === "gate_proj" || t === "up_proj" || t === "down_proj" ? "mlp" : "self_attn";
}

/** [out, in] of a projection. */
function projectionShape(model: Model, t: LoraTarget): [number, number] {
  const c = model.config;
  const q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
  switch (t) {
    case "q_proj": return [q, c.hiddenSize];
    case "k_proj": case "v_proj": return [kv, c.hiddenSize];
    case "o_proj": return [c.hiddenSize, q];
    case "gate_proj": case "up_proj": return [c.intermediateSize, c.hiddenSize];
    case "down_proj": return [c.hiddenSize, c.intermediateSize];
  }
}

interface Factor {
  layer: number;
  target: LoraTarget;
  prefix: string;
  a: Float32Array;
  b: Float32Array;
  ga: Float32Array;
  gb: Float32Array;
  shape: [number, number];
}

export class LoraParameters {
  readonly rank: number;
  readonly alpha: number;
  readonly dropout: number;
  readonly rslora: boolean;
  readonly targets: readonly LoraTarget[];
  readonly layers: readonly number[];
  readonly #factors: Factor[];
  readonly #model: Model;

  private constructor(model: Model, o: z.output<typeof loraSchema>, layers: number[]) {
    this.#model = model;
    this.rank = o.rank;
    this.alpha = o.alpha ?? 2 * o.rank;
    this.dropout = o.dropout;
    this.rslora = o.rslora;
    this.targets = LORA_TARGETS.filter((t) => o.targetModules.includes(t));
    this.layers = layers;
    this.#factors = [];
    for (const layer of layers) {
      for (const target of this.targets) {
        const shape = projectionShape(model, target);
        const prefix = `base_model.model.model.layers.${layer}.${moduleOf(target)}.${target}`;
        const na = o.rank * shape[1], nb = shape[0] * o.rank;
        this.#factors.push({
          layer, target, prefix, shape,
          a: new Float32Array(na), b: new Float32Array(nb), ga: new Float32Array(na), gb: new Float32Array(nb),
        });
      }
    }
  }

  /**
   * New factors as PEFT initializes them: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform
   * with a = sqrt(5)), B = 0, so the adapted model starts equal to the base.
   */
  static create(model: Model, options: LoraOptions | undefined, seed: number): LoraParameters {
    const o = parseOptions(loraSchema, options, "lora");
    const n = model.config.numLayers;
    const layers = o.layers ? [...new Set(o.layers)].sort((a, b) => a - b) : Array.from({ length: n }, (_, i) => i);
    for (const l of layers) {
      if (l >= n) throw new DeepGuardError("ERR_ARGUMENT", `lora option "layers": layer ${l} does not exist in a ${n}-layer model`);
    }
    const p = new LoraParameters(model, o, layers);
    const rng = new Random(seed);
    for (const f of p.#factors) {
      const bound = 1 / Math.sqrt(f.shape[1]);
      for (let i = 0; i < f.a.length; i++) f.a[i] = (2 * rng.nextDouble() - 1) * bound;
    }
    return p;
  }

  /** Reads a PEFT adapter directory written by save() (or PEFT, with F32/BF16/F16 factors) as trainable factors. */
  static async load(directory: string, model: Model): Promise<LoraParameters> {
    const { info, files } = await readAdapter(directory, model.config);
    const p = new LoraParameters(
      model,
      { rank: info.rank, alpha: info.alpha, dropout: info.dropout, targetModules: info.targets, rslora: info.rslora, layers: info.layers },
      info.layers,
    );
    const header = await readSafetensorsHeader(files[0]);
    for (const f of p.#factors) {
      for (const [key, dst, shape] of [
        ["lora_A", f.a, [p.rank, f.shape[1]]],
        ["lora_B", f.b, [f.shape[0], p.rank]],
      ] as const) {
        const name = `${f.prefix}.${key}.weight`;
        const t = header.tensors.get(name);
        if (!t || t.shape.length !== 2 || t.shape[0] !== shape[0] || t.shape[1] !== shape[1]) {
          throw new DeepGuardError("ERR_ADAPTER", `${header.path}: tensor "${name}" must exist with shape [${shape.join(", ")}]`);
        }
        dst.set(decodeTensor(await readTensorData(header, name), t.dtype));
      }
    }
    return p;
  }

  /** alpha / r, or alpha / sqrt(r) with rsLoRA. */
  get scale(): number {
    return this.rslora ? this.alpha / Math.sqrt(this.rank) : this.alpha / this.rank;
  }

  /** Live factor arrays by PEFT tensor name (the optimizer updates them in place). */
  parameters(): Record<string, Float32Array> {
    const out: Record<string, Float32Array> = {};
    for (const f of this.#factors) {
      out[`${f.prefix}.lora_A.weight`] = f.a;
      out[`${f.prefix}.lora_B.weight`] = f.b;
    }
    return out;
  }

  /** Accumulated gradients, same names and lengths as parameters(). */
  gradients(): Record<string, Float32Array> {
    const out: Record<string, Float32Array> = {};
    for (const f of this.#factors) {
      out[`${f.prefix}.lora_A.weight`] = f.ga;
      out[`${f.prefix}.lora_B.weight`] = f.gb;
    }
    return out;
  }

  zeroGrad(): void {
    for (const f of this.#factors) {
      f.ga.fill(0);
      f.gb.fill(0);
    }
  }

  /** The native view of these factors for one pass; `seed` draws this pass's dropout masks. */
  nativeSpec(seed: number, options: { train: boolean }): NativeLoraTrainSpec {
    return {
      rank: this.rank,
      scale: this.scale,
      dropout: options.train ? this.dropout : 0,
      seed,
      factors: this.#factors.map((f) => ({ layer: f.layer, target: f.target, a: f.a, b: f.b, ga: f.ga, gb: f.gb })),
    };
  }

  /** adapter_config.json as PEFT writes it. */
  adapterConfig(): Record<string, unknown> {
    const all = this.layers.length === this.#model.config.numLayers;
    return {
      peft_type: "LORA",
      task_type: "CAUSAL_LM",
      r: this.rank,
      lora_alpha: this.alpha,
      lora_dropout: this.dropout,
      target_modules: [...this.targets],
      bias: "none",
      base_model_name_or_path: this.#model.info.directory,
      fan_in_fan_out: false,
      inference_mode: true,
      init_lora_weights: true,
      layers_to_transform: all ? null : [...this.layers],
      layers_pattern: null,
      modules_to_save: null,
      rank_pattern: {},
      alpha_pattern: {},
      use_rslora: this.rslora,
      use_dora: false,
      revision: null,
    };
  }

  /** Writes the PEFT adapter into `directory` (created if needed); each file atomically (temp + rename). */
  async save(directory: string): Promise<void> {
    const dir = resolve(directory);
    await mkdir(dir, { recursive: true });
    const tensors: Record<string, { dtype: string; shape: number[]; data: Uint8Array }> = {};
    for (const f of this.#factors) {
      tensors[`${f.prefix}.lora_A.weight`] = { dtype: "F32", shape: [this.rank, f.shape[1]], data: f32Bytes(f.a) };
      tensors[`${f.prefix}.lora_B.weight`] = { dtype: "F32", shape: [f.shape[0], this.rank], data: f32Bytes(f.b) };
    }
    await writeSafetensors(join(dir, "adapter_model.safetensors"), tensors, { format: "pt" });
    await writeFileAtomic(join(dir, "adapter_config.json"), JSON.stringify(this.adapterConfig(), null, 2) + "\n");
  }
}

export interface TrainPassOptions {
  /** Hidden-state indices (0..L) to return and accept gradients for. */
  capture?: number[];
  /** Next-token targets per row (-1: none) with their CE weights. */
  targets?: Int32Array;
  ceWeights?: Float32Array;
  /** KL(p_base || p_lora) weights per row; enables the adapter-off base pass. */
  klWeights?: Float32Array;
  recompute?: boolean;
  returnLogits?: boolean;
}

/**
 * One training forward over `ids` with the LoRA factors (or the base when null):
 * resolves to the pass (loss sums, captured hidden states), whose backward()
 * accumulates the factors' gradients. Dispose the pass when done.
 */
export async function trainForward(
  model: Model,
  ids: Int32Array,
  lora: LoraParameters | null,
  options: TrainPassOptions & { seed?: number; train?: boolean } = {},
): Promise<NativeTrainPass> {
  try {
    return await native().trainForward(engineOf(model), ids, lora ? lora.nativeSpec(options.seed ?? 0, { train: options.train ?? true }) : null, {
      capture: options.capture ?? [],
      ...(options.targets ? { targets: options.targets, ceWeights: options.ceWeights ?? new Float32Array(ids.length).fill(1) } : {}),
      ...(options.klWeights ? { klWeights: options.klWeights } : {}),
      recompute: options.recompute ?? false,
      returnLogits: options.returnLogits ?? false,
    });
  } catch (err) {
    throw wrapNativeError(err);
  }
}
