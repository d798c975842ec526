/** --quantize / --quant-cache / --activations / --kv-cache, shared by every command that loads a model for inference. */
import { DeepGuardError } from "../errors.js";
import { QUANT_FORMATS, type KvCacheDtype, type LoadOptions, type QuantFormat } from "../model/model.js";

export const QUANTIZE_FLAGS = {
  quantize: { type: "string" },
  "quant-cache": { type: "boolean" },
  activations: { type: "string" },
  "kv-cache": { type: "string" },
} as const;

const ACTIVATIONS = ["auto", "float32", "bfloat16"] as const;

export const QUANTIZE_USAGE =
  "every command that loads a model also takes --quantize q8_0|q4_0|q4_k (quantize the weights at load)\n  and --quant-cache (keep them in <model-dir>/deepguard-<format>.dgq for the next load),\n" +
  "  --activations auto|float32|bfloat16 (what BF16 weights multiply; default auto) and\n  --kv-cache f32|bf16 (the KV cache's dtype; default: Model.load's); training commands do not";

/** --kv-cache values and the Model.load kvCacheDtype each stands for. */
const KV_CACHE_FLAG: Record<string, KvCacheDtype> = { f32: "float32", bf16: "bfloat16" };

/** Model.load options from the parsed flags; bad values are ERR_USAGE naming the flag. */
export function modelLoadOptions(values: { quantize?: string; "quant-cache"?: boolean; activations?: string; "kv-cache"?: string }): LoadOptions {
  const a = values.activations;
  if (a !== undefined && !(ACTIVATIONS as readonly string[]).includes(a)) {
    throw new DeepGuardError("ERR_USAGE", `--activations must be one of ${ACTIVATIONS.join(", ")}, got "${a}"`);
  }
  const kv = values["kv-cache"];
  if (kv !== undefined && !Object.hasOwn(KV_CACHE_FLAG, kv)) {
    throw new DeepGuardError("ERR_USAGE", `--kv-cache must be f32 or bf16, got "${kv}"`);
  }
  const common: LoadOptions = {
    ...(a === undefined ? {} : { activations: a as (typeof ACTIVATIONS)[number] }),
    ...(kv === undefined ? {} : { kvCacheDtype: KV_CACHE_FLAG[kv] }),
  };
  const q = values.quantize;
  if (q === undefined) {
    if (values["quant-cache"]) throw new DeepGuardError("ERR_USAGE", "--quant-cache needs --quantize");
    return common;
  }
  if (!(QUANT_FORMATS as readonly string[]).includes(q)) {
    throw new DeepGuardError("ERR_USAGE", `--quantize must be one of ${QUANT_FORMATS.join(", ")}, got "${q}"`);
  }
  return { ...common, quantize: q as QuantFormat, ...(values["quant-cache"] ? { quantCache: true } : {}) };
}
