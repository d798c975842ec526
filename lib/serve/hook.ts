/**
 * The per-step hook of a generation: the open seam where guided generation (a
 * security analyzer re-scoring the captured hidden states and steering the
 * logits) plugs into the native decode loop without a per-element JavaScript
 * loop and without a second forward pass.
 *
 *   for await (const piece of model.generate(prompt, {
 *     hook: {
 *       hiddenStates: [-4, -3, -2, -1],             // captured for every token fed
 *       onStep: ({ hiddenStates, generated }) => {  // before each token is sampled
 *         const score = analyzer(hiddenStates);      // rows of the tokens fed since the last call
 *         return biasFor(score);                     // Float32Array [vocab], null = none, undefined = keep
 *       },
 *     },
 *   })) ...
 *
 * With onStep the sequence runs stepwise: after each forward its next-token
 * logits wait in native memory until onStep has returned, and the bias it
 * returns is added to them (in native code) before the native sampler draws the
 * token. The first call sees the whole prompt's hidden states, later calls the
 * one token fed since. Other sequences keep decoding while one waits.
 */
import { z } from "zod";
import type { HiddenStateSelection } from "../model/session.js";
import type { Matrix } from "../model/tensor.js";

export interface StepState {
  /** 0 before the first generated token, then 1, 2, ... */
  step: number;
  /** The tokens fed to the model since the previous call (the prompt first, then one generated token). */
  fed: Int32Array;
  /** Captured hidden-state index -> [fed.length][hidden] rows for those tokens. */
  hiddenStates: Map<number, Matrix>;
  /** The tokens generated so far. */
  generated: readonly number[];
}

/** A new logit bias ([vocab]) for the coming token and after; null clears it; undefined keeps it. */
export type StepDecision = Float32Array | null | undefined;

export interface StepHook {
  /** Hidden states captured for every token fed, delivered to onStep (needs onStep). */
  hiddenStates?: HiddenStateSelection;
  /** A bias [vocab] added to the logits before every sample (e.g. -Infinity bans a token). */
  logitBias?: Float32Array | null;
  /** Called before each token is sampled; the generation waits for it. */
  onStep?: (state: StepState) => StepDecision | Promise<StepDecision>;
}

export const stepHookSchema = z
  .object({
    hiddenStates: z.union([z.literal("all"), z.literal("none"), z.array(z.number())]).optional(),
    logitBias: z.instanceof(Float32Array).nullable().optional(),
    onStep: z.custom<StepHook["onStep"]>((v) => typeof v === "function", "must be a function").optional(),
  })
  .strict()
  .refine((h) => h.hiddenStates === undefined || h.hiddenStates === "none" || h.onStep !== undefined, {
    message: "hiddenStates are delivered to onStep: give an onStep function too",
  });
