/** --quantize / --quant-cache / --activations, shared by every command that loads a model for inference. */
import { DeepGuardError } from "../errors.js";
import { QUANT_FORMATS, type LoadOptions, type QuantFormat } from "../model/model.js";

export const QUANTIZE_FLAGS = { quantize: { type: "string" }, "quant-cache": { type: "boolean" }, activations: { type: "string" } } as const;

const ACTIVATIONS = ["auto", "float32", "bfloat16"] as const;

export const QUANTIZE_USAGE =
  "every command that loads a model also takes --quantize q8_0|q4_0|q4_k (quantize the weights at load)\n  and --quant-cache (keep them in <model-dir>/deepguard-<format>.dgq for the next load),\n  and --activations auto|float32|bfloat16 (what BF16 weights multiply; default auto); training commands do not";

/** Model.load options from the parsed flags; bad values are ERR_USAGE naming the flag. */
export function modelLoadOptions(values: { quantize?: string; "quant-cache"?: boolean; activations?: string }): LoadOptions {
  const a = values.activations;
  if (a !== undefined && !(ACTIVATIONS as readonly string[]).includes(a)) {
    throw new DeepGuardError("ERR_USAGE", `--activations must be one of ${ACTIVATIONS.join(", ")}, got "${a}"`);
  }
  const acts: LoadOptions = a === undefined ? {} : { activations: a as (typeof ACTIVATIONS)[number] };
  const q = values.quantize;
  if (q === undefined) {
    if (values["quant-cache"]) throw new DeepGuardError("ERR_USAGE", "--quant-cache needs --quantize");
    return acts;
  }
  if (!(QUANT_FORMATS as readonly string[]).includes(q)) {
    throw new DeepGuardError("ERR_USAGE", `--quantize must be one of ${QUANT_FORMATS.join(", ")}, got "${q}"`);
  }
  return { ...acts, quantize: q as QuantFormat, ...(values["quant-cache"] ? { quantCache: true } : {}) };
}
