/**
 * Learning-rate schedules shared by every trainer (guard, LoRA, pretraining):
 * linear warmup, then linear or cosine decay to `minLrRatio * lr`, or constant.
 */
import { z } from "zod";
import { DeepGuardError } from "../errors.js";
import { parseOptions } from "../validate.js";

export interface ScheduleOptions {
  /** Peak learning rate, reached at the end of warmup. */
  lr: number;
  /** Steps of linear warmup from lr / warmupSteps to lr (default 0). */
  warmupSteps?: number;
  /** Total optimizer steps of the run; decay reaches its floor here. */
  totalSteps: number;
  /** Shape after warmup (default "cosine"). */
  decay?: "linear" | "cosine" | "constant";
  /** Floor of the decay as a fraction of lr (default 0). */
  minLrRatio?: number;
}

export const scheduleSchema = z
  .object({
    lr: z.number().finite().positive(),
    warmupSteps: z.number().int().nonnegative().default(0),
    totalSteps: z.number().int().positive(),
    decay: z.enum(["linear", "cosine", "constant"]).default("cosine"),
    minLrRatio: z.number().min(0).max(1).default(0),
  })
  .strict();

/** The learning rate of optimizer step `step` (0-based). Steps past totalSteps stay at the floor. */
export function learningRate(step: number, options: ScheduleOptions): number {
  const o = parseOptions(scheduleSchema, options, "schedule");
  if (!Number.isInteger(step) || step < 0) throw new DeepGuardError("ERR_ARGUMENT", `learningRate: step must be an integer >= 0, got ${step}`);
  if (step < o.warmupSteps) return (o.lr * (step + 1)) / o.warmupSteps;
  if (o.decay === "constant") return o.lr;
  const span = Math.max(1, o.totalSteps - o.warmupSteps);
  const progress = Math.min(1, (step - o.warmupSteps) / span);
  const shape = o.decay === "linear" ? 1 - progress : 0.5 * (1 + Math.cos(Math.PI * progress));
  return o.lr * (o.minLrRatio + (1 - o.minLrRatio) * shape);
}
