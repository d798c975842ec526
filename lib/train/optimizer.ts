/**
 * AdamW over named Float32Array parameters, updated in native code off the event
 * loop (native/train/adamw.cpp: torch.optim.AdamW's arithmetic), with global-norm
 * gradient clipping. The state (step count, moments) can be saved and restored for
 * exact resume. Shared by the guard trainer, the LoRA trainer and pretraining.
 */
import { z } from "zod";
import { DeepGuardError } from "../errors.js";
import { native } from "../native.js";
import { parseOptions } from "../validate.js";

export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Decoupled weight decay (default 0.01), applied to every parameter unless `noDecay` names it. */
  weightDecay?: number;
  /** Parameters exempt from weight decay (biases, norms, embeddings...). */
  noDecay?: (name: string) => boolean;
}

const adamwSchema = z
  .object({
    beta1: z.number().min(0).lt(1).default(0.9),
    beta2: z.number().min(0).lt(1).default(0.999),
    eps: z.number().positive().max(1).default(1e-8),
    weightDecay: z.number().min(0).finite().default(0.01),
    noDecay: z.custom<(name: string) => boolean>((v) => typeof v === "function", "must be a function").optional(),
  })
  .strict();

/** Saved optimizer state: the update count and both moments of every parameter. */
export interface AdamWState {
  step: number;
  m: Record<string, Float32Array>;
  v: Record<string, Float32Array>;
}

export class AdamW {
  readonly #params: ReadonlyMap<string, Float32Array>;
  readonly #m = new Map<string, Float32Array>();
  readonly #v = new Map<string, Float32Array>();
  readonly #options: z.output<typeof adamwSchema>;
  #step = 0;

  /** `params` are updated in place by step(); the optimizer keeps references, not copies. */
  constructor(params: Record<string, Float32Array> | ReadonlyMap<string, Float32Array>, options: AdamWOptions = {}) {
    this.#options = parseOptions(adamwSchema, options, "AdamW");
    const entries = params instanceof Map ? [...params] : Object.entries(params);
    if (entries.length === 0) throw new DeepGuardError("ERR_ARGUMENT", "AdamW needs at least one parameter");
    for (const [name, p] of entries) {
      if (!(p instanceof Float32Array)) throw new DeepGuardError("ERR_ARGUMENT", `AdamW parameter "${name}" must be a Float32Array`);
      this.#m.set(name, new Float32Array(p.length));
      this.#v.set(name, new Float32Array(p.length));
    }
    this.#params = new Map(entries);
  }

  /** Number of updates applied so far. */
  get stepCount(): number {
    return this.#step;
  }

  /** One update at learning rate `lr` with gradients by parameter name (every parameter needs one). */
  async step(grads: Record<string, Float32Array> | ReadonlyMap<string, Float32Array>, lr: number): Promise<void> {
    if (!(Number.isFinite(lr) && lr >= 0)) throw new DeepGuardError("ERR_ARGUMENT", `AdamW: lr must be a finite number >= 0, got ${lr}`);
    const get = (name: string) => (grads instanceof Map ? grads.get(name) : (grads as Record<string, Float32Array>)[name]);
    const decayed: Parameters<ReturnType<typeof native>["adamwStep"]>[0] = [];
    const exempt: typeof decayed = [];
    for (const [name, param] of this.#params) {
      const grad = get(name);
      if (!(grad instanceof Float32Array) || grad.length !== param.length) {
        throw new DeepGuardError("ERR_ARGUMENT", `AdamW: gradient "${name}" must be a Float32Array of length ${param.length}`);
      }
      const t = { param, grad, m: this.#m.get(name)!, v: this.#v.get(name)! };
      (this.#options.noDecay?.(name) ? exempt : decayed).push(t);
    }
    const { beta1, beta2, eps, weightDecay } = this.#options;
    const step = this.#step + 1;
    if (decayed.length > 0) await native().adamwStep(decayed, { lr, beta1, beta2, eps, weightDecay, step });
    if (exempt.length > 0) await native().adamwStep(exempt, { lr, beta1, beta2, eps, weightDecay: 0, step });
    this.#step = step;
  }

  /** A deep copy of the state, for checkpoints. */
  state(): AdamWState {
    const copy = (m: Map<string, Float32Array>) => Object.fromEntries([...m].map(([k, a]) => [k, a.slice()]));
    return { step: this.#step, m: copy(this.#m), v: copy(this.#v) };
  }

  /** Restores a state saved by state() for the same parameters. */
  loadState(state: AdamWState): void {
    if (!Number.isInteger(state?.step) || state.step < 0) throw new DeepGuardError("ERR_ARGUMENT", "AdamW state: step must be an integer >= 0");
    for (const [name, p] of this.#params) {
      for (const [which, src, dst] of [["m", state.m, this.#m], ["v", state.v, this.#v]] as const) {
        const a = src?.[name];
        if (!(a instanceof Float32Array) || a.length !== p.length) {
          throw new DeepGuardError("ERR_ARGUMENT", `AdamW state: ${which}["${name}"] must be a Float32Array of length ${p.length}`);
        }
        dst.get(name)!.set(a);
      }
    }
    this.#step = state.step;
  }
}

/**
 * Scales every gradient in place so their global L2 norm is at most maxNorm
 * (torch.nn.utils.clip_grad_norm_); returns the norm before clipping.
 * maxNorm = Infinity only measures.
 */
export async function clipGradNorm(grads: readonly Float32Array[], maxNorm: number): Promise<number> {
  if (!(maxNorm > 0)) throw new DeepGuardError("ERR_ARGUMENT", `clipGradNorm: maxNorm must be > 0, got ${maxNorm}`);
  for (const g of grads) if (!(g instanceof Float32Array)) throw new DeepGuardError("ERR_ARGUMENT", "clipGradNorm: every gradient must be a Float32Array");
  return native().clipGradients([...grads], maxNorm);
}
