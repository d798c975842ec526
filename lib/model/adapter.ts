/**
 * PEFT LoRA adapter directories (adapter_config.json + adapter_model.safetensors),
 * validated against the base model before the native side maps the factors.
 */
import { join, resolve } from "node:path";
import { z } from "zod";
import { exists, tensorTable } from "./checkpoint.js";
import type { ModelConfig } from "./config.js";
import { DeepGuardError } from "../errors.js";
import { readSafetensorsHeader } from "../io/safetensors.js";
import type { NativeTensorRef } from "../native-types.js";
import { describeIssue, issueField, readJsonFile } from "../validate.js";

export const LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;
export type LoraTarget = (typeof LORA_TARGETS)[number];

export interface AdapterInfo {
  directory: string;
  rank: number;
  alpha: number;
  /** Multiplier of B·A: alpha / r, or alpha / sqrt(r) with rsLoRA. */
  scale: number;
  /** lora_dropout (0 when absent); used only when training. */
  dropout: number;
  /** use_rslora. */
  rslora: boolean;
  targets: LoraTarget[];
  /** Layers that carry factors. */
  layers: number[];
  baseModel: string | null;
  dtype: string;
}

export interface AdapterFiles {
  info: AdapterInfo;
  files: string[];
  tensors: NativeTensorRef[];
}

const emptyish = z.union([z.null(), z.array(z.unknown()).length(0), z.record(z.string(), z.unknown())]);

const adapterConfigSchema = z
  .object({
    peft_type: z.literal("LORA"),
    task_type: z.literal("CAUSAL_LM").nullable().optional(),
    r: z.number().int().positive(),
    lora_alpha: z.number().positive(),
    lora_dropout: z.number().min(0).max(1).optional(),
    target_modules: z.union([z.array(z.string()).min(1), z.string()]),
    bias: z.literal("none").optional(),
    base_model_name_or_path: z.string().nullable().optional(),
    use_rslora: z.boolean().optional(),
    use_dora: z.literal(false).optional(),
    fan_in_fan_out: z.literal(false).optional(),
    modules_to_save: z.union([z.null(), z.array(z.string()).length(0)]).optional(),
    layers_to_transform: z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative()), z.null()]).optional(),
    rank_pattern: emptyish.optional(),
    alpha_pattern: emptyish.optional(),
  })
  .loose();

function fail(where: string, message: string): never {
  throw new DeepGuardError("ERR_ADAPTER", `${where}: ${message}`);
}

function targetsOf(where: string, raw: string | string[]): LoraTarget[] {
  if (raw === "all-linear") return [...LORA_TARGETS];
  if (typeof raw === "string") fail(where, `field "target_modules": a regular expression ("${raw}") is not supported; list module names`);
  const out = new Set<LoraTarget>();
  for (const t of raw) {
    const short = t.split(".").pop()!; // "self_attn.q_proj" -> "q_proj"
    if (!(LORA_TARGETS as readonly string[]).includes(short)) {
      fail(where, `field "target_modules": "${t}" is not one of ${LORA_TARGETS.join(", ")}`);
    }
    out.add(short as LoraTarget);
  }
  return LORA_TARGETS.filter((t) => out.has(t));
}

/** Reads and validates an adapter directory for a model with `config`. */
export async function readAdapter(directory: string, config: ModelConfig): Promise<AdapterFiles> {
  const dir = resolve(directory);
  const where = join(dir, "adapter_config.json");
  const json = await readJsonFile(where, "ERR_ADAPTER", true);
  if (json === undefined) fail(where, "not found");
  const parsed = adapterConfigSchema.safeParse(json);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    fail(where, describeIssue(i) + (issueField(i).missing ? "" : " (unsupported or invalid)"));
  }
  const c = parsed.data;
  const layers =
    c.layers_to_transform == null
      ? Array.from({ length: config.numLayers }, (_, i) => i)
      : [...new Set([c.layers_to_transform].flat())].sort((a, b) => a - b);
  for (const l of layers) {
    if (l >= config.numLayers) fail(where, `field "layers_to_transform": layer ${l} does not exist in a ${config.numLayers}-layer model`);
  }

  const weights = join(dir, "adapter_model.safetensors");
  if (!(await exists(weights))) {
    const hint = (await exists(join(dir, "adapter_model.bin"))) ? " (adapter_model.bin is pickled and is never loaded)" : "";
    throw new DeepGuardError("ERR_ADAPTER", `${dir} has no adapter_model.safetensors${hint}`);
  }
  const header = await readSafetensorsHeader(weights);
  const dtypes = new Set([...header.tensors.values()].map((t) => t.dtype));
  const info: AdapterInfo = {
    directory: dir,
    rank: c.r,
    alpha: c.lora_alpha,
    scale: c.use_rslora ? c.lora_alpha / Math.sqrt(c.r) : c.lora_alpha / c.r,
    dropout: c.lora_dropout ?? 0,
    rslora: c.use_rslora ?? false,
    targets: targetsOf(where, c.target_modules),
    layers,
    baseModel: c.base_model_name_or_path ?? null,
    dtype: [...dtypes].join("/") || "none",
  };
  return { info, files: [header.path], tensors: tensorTable([header]) };
}
