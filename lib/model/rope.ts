/**
 * Rotary embedding frequencies, computed once per model as transformers'
 * rope init functions do (modeling_rope_utils): the native engine only ever
 * sees the final inv_freq table, so every scaling type is handled here.
 */
import { z } from "zod";
import { DeepGuardError } from "../errors.js";
import { describeIssue, issueField } from "../validate.js";

export type RopeScaling =
  | { type: "linear"; factor: number }
  | { type: "llama3"; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number };

const linearSchema = z.object({ factor: z.number().positive() }).loose();
const llama3Schema = z
  .object({
    factor: z.number().positive(),
    low_freq_factor: z.number().positive(),
    high_freq_factor: z.number().positive(),
    original_max_position_embeddings: z.number().int().positive(),
  })
  .loose();

/** rope_scaling from config.json (already known to be an object or null/undefined). */
export function parseRopeScaling(raw: Record<string, unknown> | null | undefined, where: string): RopeScaling | null {
  if (!raw) return null;
  const kind = raw.rope_type ?? raw.type;
  const check = <S extends z.ZodType>(schema: S): z.output<S> => {
    const parsed = schema.safeParse(raw);
    if (!parsed.success) {
      const i = parsed.error.issues[0];
      const { field, missing } = issueField(i, "rope_scaling.");
      throw new DeepGuardError(
        "ERR_CONFIG",
        `${where}: ${missing ? `field "${field}" is required for type "${String(kind)}"` : describeIssue(i, "rope_scaling.")}`,
      );
    }
    return parsed.data;
  };
  if (kind === "default") return null;
  if (kind === "linear") return { type: "linear", factor: check(linearSchema).factor };
  if (kind === "llama3") {
    const s = check(llama3Schema);
    if (!(s.high_freq_factor > s.low_freq_factor)) {
      throw new DeepGuardError("ERR_CONFIG", `${where}: field "rope_scaling.high_freq_factor" must exceed low_freq_factor`);
    }
    return {
      type: "llama3",
      factor: s.factor,
      lowFreqFactor: s.low_freq_factor,
      highFreqFactor: s.high_freq_factor,
      originalMaxPositionEmbeddings: s.original_max_position_embeddings,
    };
  }
  throw new DeepGuardError(
    "ERR_CONFIG",
    `${where}: field "rope_scaling": type ${JSON.stringify(kind)} is not supported (supported: "linear", "llama3")`,
  );
}

/**
 * inv_freq[i] for i < headDim / 2: theta^(-2i/headDim), then
 * - linear: divided by factor (the same as dividing positions by it);
 * - llama3: long wavelengths (> original / low_freq_factor) divided by factor,
 *   short ones (< original / high_freq_factor) kept, and the band between
 *   interpolated by (original / wavelength - low) / (high - low).
 */
export function ropeInverseFrequencies(theta: number, headDim: number, scaling: RopeScaling | null): number[] {
  const base = Array.from({ length: headDim / 2 }, (_, i) => 1 / theta ** ((2 * i) / headDim));
  if (!scaling) return base;
  if (scaling.type === "linear") return base.map((f) => f / scaling.factor);
  const { factor, lowFreqFactor: low, highFreqFactor: high, originalMaxPositionEmbeddings: original } = scaling;
  return base.map((f) => {
    const wavelength = (2 * Math.PI) / f;
    if (wavelength < original / high) return f;
    if (wavelength > original / low) return f / factor;
    const smooth = (original / wavelength - low) / (high - low);
    return (1 - smooth) * (f / factor) + smooth * f;
  });
}
