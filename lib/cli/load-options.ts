/** --quantize / --quant-cache / --kv-cache, shared by every command that loads a model for inference. */
import { DeepGuardError } from "../errors.js";
import { QUANT_FORMATS, type KvCacheDtype, type LoadOptions, type QuantFormat } from "../model/model.js";

export const QUANTIZE_FLAGS = {
  quantize: { type: "string" },
  "quant-cache": { type: "boolean" },
  "kv-cache": { type: "string" },
} as const;

export const QUANTIZE_USAGE =
  "every command that loads a model also takes --quantize q8_0|q4_0|q4_k (quantize the weights at load)\n  and --quant-cache (keep them in <model-dir>/deepguard-<format>.dgq for the next load), and\n  --kv-cache f32|bf16 (the KV cache's dtype; default: Model.load's); training commands do not";

/** --kv-cache values and the Model.load kvCacheDtype each stands for. */
const KV_CACHE_FLAG: Record<string, KvCacheDtype> = { f32: "float32", bf16: "bfloat16" };

/** Model.load options from the parsed flags; bad values are ERR_USAGE naming the flag. */
export function modelLoadOptions(values: { quantize?: string; "quant-cache"?: boolean; "kv-cache"?: string }): LoadOptions {
  const kv = values["kv-cache"];
  if (kv !== undefined && !Object.hasOwn(KV_CACHE_FLAG, kv)) {
    throw new DeepGuardError("ERR_USAGE", `--kv-cache must be f32 or bf16, got "${kv}"`);
  }
  const kvOption: LoadOptions = kv === undefined ? {} : { kvCacheDtype: KV_CACHE_FLAG[kv] };
  const q = values.quantize;
  if (q === undefined) {
    if (values["quant-cache"]) throw new DeepGuardError("ERR_USAGE", "--quant-cache needs --quantize");
    return kvOption;
  }
  if (!(QUANT_FORMATS as readonly string[]).includes(q)) {
    throw new DeepGuardError("ERR_USAGE", `--quantize must be one of ${QUANT_FORMATS.join(", ")}, got "${q}"`);
  }
  return { quantize: q as QuantFormat, ...(values["quant-cache"] ? { quantCache: true } : {}), ...kvOption };
}
