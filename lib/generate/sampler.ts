/**
 * The native sampler, for custom decoding loops (the scheduler uses the same
 * code): temperature, top-k, top-p, an optional logit bias, and a seeded draw
 * that reproduces generate()'s tokens for the same seed.
 *
 *   const sampler = new Sampler({ temperature: 0.8, topP: 0.95, seed: 1 });
 *   let step = await session.eval(prompt);
 *   for (let i = 0; i < 32; i++) {
 *     const token = sampler.sample(step.logits.row(0), bias);
 *     step = await session.eval([token]);
 *   }
 */
import { z } from "zod";
import { DeepGuardError, wrapNativeError } from "../errors.js";
import { native } from "../native.js";
import { Random } from "../random.js";
import { parseOptions } from "../validate.js";
import type { SamplingOptions } from "./generate.js";

const samplingSchema = z
  .object({
    temperature: z.number().finite().nonnegative().default(0),
    topK: z.number().int().nonnegative().max(2 ** 31 - 1).default(0),
    topP: z.number().gt(0).lte(1).default(1),
    seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
  })
  .strict();

/**
 * One token from `logits` (+ `bias`, added natively) at the uniform draw u in
 * [0, 1). Throws ERR_NON_FINITE when a logit is NaN or +Infinity or all are -Infinity.
 */
export function sampleToken(
  logits: Float32Array,
  options: Omit<SamplingOptions, "seed">,
  u: number,
  bias?: Float32Array | null,
): number {
  const { temperature, topK, topP } = parseOptions(samplingSchema, options, "sampleToken");
  if (typeof u !== "number" || !(u >= 0 && u < 1)) throw new DeepGuardError("ERR_ARGUMENT", "sampleToken: u must be a number in [0, 1)");
  try {
    return native().sampleToken(logits, { temperature, topK, topP }, u, bias ?? undefined);
  } catch (err) {
    throw wrapNativeError(err);
  }
}

/** A seeded sampler: the same seed gives the same draws as generate() with that seed. */
export class Sampler {
  readonly seed: number;
  readonly #params: { temperature: number; topK: number; topP: number };
  readonly #random: Random;

  constructor(options: SamplingOptions = {}) {
    const { temperature, topK, topP, seed } = parseOptions(samplingSchema, options, "Sampler");
    this.#params = { temperature, topK, topP };
    this.seed = seed ?? Math.floor(Math.random() * 2 ** 32);
    this.#random = new Random(this.seed);
  }

  /** The next token from logits [vocab] plus an optional bias [vocab]. */
  sample(logits: Float32Array, bias?: Float32Array | null): number {
    return sampleToken(logits, this.#params, this.#random.nextDouble(), bias);
  }
}
