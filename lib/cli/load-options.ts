/** --quantize / --quant-cache, shared by every command that loads a model for inference. */
import { DeepGuardError } from "../errors.js";
import { QUANT_FORMATS, type LoadOptions, type QuantFormat } from "../model/model.js";

export const QUANTIZE_FLAGS = { quantize: { type: "string" }, "quant-cache": { type: "boolean" } } as const;

export const QUANTIZE_USAGE =
  "every command that loads a model also takes --quantize q8_0|q4_0|q4_k (quantize the weights at load)\n  and --quant-cache (keep them in <model-dir>/deepguard-<format>.dgq for the next load); training commands do not";

/** Model.load options from the parsed flags; bad values are ERR_USAGE naming the flag. */
export function modelLoadOptions(values: { quantize?: string; "quant-cache"?: boolean }): LoadOptions {
  const q = values.quantize;
  if (q === undefined) {
    if (values["quant-cache"]) throw new DeepGuardError("ERR_USAGE", "--quant-cache needs --quantize");
    return {};
  }
  if (!(QUANT_FORMATS as readonly string[]).includes(q)) {
    throw new DeepGuardError("ERR_USAGE", `--quantize must be one of ${QUANT_FORMATS.join(", ")}, got "${q}"`);
  }
  return { quantize: q as QuantFormat, ...(values["quant-cache"] ? { quantCache: true } : {}) };
}
