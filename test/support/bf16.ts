/**
 * Checking a model loaded with activations "bfloat16" against the float64
 * reference that rounds every linear input to BF16 (referenceForward's
 * bf16Activations).
 *
 * Why not one max-error tolerance: the products bf16(x) w are exact and sum in
 * f32, so the engine normally agrees with the rounding reference to ~1e-7. But
 * the engine rounds its f32 value of each linear input and the reference its
 * float64 value; where the two straddle a BF16 rounding boundary (a chance of
 * ~(f32 error) / (BF16 step) ~ 1e-7 / 2^-9, a few times in 10^5 values) that
 * input differs by one BF16 step, and the shift travels on through the later
 * layers and, by attention, to the later tokens: measured up to 2e-3 relative,
 * as large as the whole difference between rounding and not rounding (1e-3 to
 * 2.5e-3 on the tiny checkpoints). So the check runs many short sequences
 * (~5000 rounded values each, so ~1 in 10 meets a straddle) and asks that
 * - at least half agree with the rounding reference to TIGHT (no straddle;
 *   a failure needs 7 straddles among 12 sequences, p ~ 1e-4),
 * - none agrees with the exact (unrounded) reference to TIGHT (the check
 *   tells the two semantics apart),
 * - every sequence stays within LOOSE of the rounding reference.
 */
import type { Model } from "../../lib/index.js";
import type { TinyCheckpoint } from "./checkpoint.js";
import { flatten, randomIds, relativeError } from "./compare.js";
import { referenceForward } from "./reference.js";

export const TIGHT = 1e-5;
export const LOOSE = 1e-2;

export interface Bf16Agreement {
  sequences: number;
  /** Sequences within TIGHT of the rounding reference (logits and every hidden state). */
  clean: number;
  /** Sequences within TIGHT of the exact reference. */
  cleanExact: number;
  /** The largest error against the rounding reference. */
  worst: number;
}

function worstError(out: { logits: { data: Float32Array }; hiddenStates: Map<number, { data: Float32Array }> }, ref: ReturnType<typeof referenceForward>): number {
  let worst = relativeError(out.logits.data, flatten(ref.logits));
  ref.hiddenStates.forEach((h, l) => (worst = Math.max(worst, relativeError(out.hiddenStates.get(l)!.data, flatten(h)))));
  return worst;
}

/** Runs `sequences` random sequences of `length` tokens through model.forward and both references. */
export async function bf16Agreement(model: Model, ckpt: TinyCheckpoint, seed: number, sequences = 12, length = 5): Promise<Bf16Agreement> {
  const vocab = ckpt.config.vocab_size as number;
  const result: Bf16Agreement = { sequences, clean: 0, cleanExact: 0, worst: 0 };
  for (let s = 0; s < sequences; s++) {
    const ids = randomIds(length, vocab, seed * 1000 + s);
    const out = await model.forward(ids, { hiddenStates: "all" });
    const rounded = worstError(out, referenceForward(ckpt.config, ckpt.weights, ids, { bf16Activations: true }));
    const exact = worstError(out, referenceForward(ckpt.config, ckpt.weights, ids));
    if (rounded <= TIGHT) result.clean++;
    if (exact <= TIGHT) result.cleanExact++;
    result.worst = Math.max(result.worst, rounded);
  }
  return result;
}

/** The three conditions above, as one message per failure (empty when all hold). */
export function bf16Problems(a: Bf16Agreement): string[] {
  const problems: string[] = [];
  if (a.clean * 2 < a.sequences) problems.push(`only ${a.clean} of ${a.sequences} sequences match the BF16-rounding reference to ${TIGHT}`);
  if (a.cleanExact > 0) problems.push(`${a.cleanExact} sequences match the exact reference to ${TIGHT}: activations are not rounded`);
  if (!(a.worst <= LOOSE)) problems.push(`error ${a.worst} against the BF16-rounding reference exceeds ${LOOSE}`);
  return problems;
}
