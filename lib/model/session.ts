/**
 * A sequence being decoded incrementally: it owns a KV cache in native memory, so
 * each eval() only computes the new tokens. Calls on one session are queued; many
 * sessions may share one Model and run concurrently (and be batched together).
 */
import { z } from "zod";
import { DeepGuardError, throwIfAborted, wrapNativeError } from "../errors.js";
import type { NativeModel, NativeSession } from "../native-types.js";
import type { Scheduler } from "../serve/scheduler.js";
import { parseOptions, signalSchema } from "../validate.js";
import { Matrix } from "./tensor.js";

/** Which of the L+1 hidden states (HF output_hidden_states order) to return; negatives count from the end (-1 = final norm). */
export type HiddenStateSelection = "all" | "none" | readonly number[];

export interface EvalOptions {
  /** Logits for every new token, only the last one (default), or none. */
  logits?: "all" | "last" | "none";
  hiddenStates?: HiddenStateSelection;
  /** Apply the model's LoRA adapter, when one is loaded (default true); false gives the base model. */
  adapter?: boolean;
  signal?: AbortSignal;
}

export interface EvalResult {
  /** [rows][vocab]: rows = new tokens ("all"), 1 ("last") or 0 ("none"). */
  logits: Matrix;
  /** Hidden-state index (0 = embeddings ... L = final norm) -> [new tokens][hidden]. */
  hiddenStates: Map<number, Matrix>;
}

interface EngineShape {
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
}

const evalOptionsSchema = z
  .object({
    logits: z.enum(["all", "last", "none"]).default("last"),
    hiddenStates: z.union([z.literal("all"), z.literal("none"), z.array(z.number())]).optional(),
    adapter: z.boolean().default(true),
    signal: signalSchema,
  })
  .strict();

/** Resolves a selection to ascending unique indices in [0, L]. */
export function resolveHiddenStates(sel: HiddenStateSelection | undefined, numLayers: number): number[] {
  if (sel === undefined || sel === "none") return [];
  if (sel === "all") return Array.from({ length: numLayers + 1 }, (_, i) => i);
  if (!Array.isArray(sel)) throw new DeepGuardError("ERR_ARGUMENT", `hiddenStates must be "all", "none" or an array of layer indices`);
  const out = new Set<number>();
  for (const raw of sel) {
    if (!Number.isInteger(raw) || raw < -(numLayers + 1) || raw > numLayers) {
      throw new DeepGuardError(
        "ERR_ARGUMENT",
        `hiddenStates index ${String(raw)} is out of range [${-(numLayers + 1)}, ${numLayers}] for a ${numLayers}-layer model`,
      );
    }
    out.add(raw < 0 ? numLayers + 1 + raw : raw);
  }
  return [...out].sort((a, b) => a - b);
}

/** The most tokens one call accepts (far beyond any context window; bounds the copy). */
export const MAX_TOKENS_PER_CALL = 2 ** 24;

/** A short, safe description of any value for an error message. */
function describe(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v);
  if (v === null || typeof v !== "object") return String(v);
  return Object.prototype.toString.call(v);
}

/** Copies ids into an Int32Array, rejecting anything that is not a valid token id. */
export function toTokenArray(tokens: ArrayLike<number>, vocabSize: number, what = "tokens"): Int32Array {
  if (tokens === null || typeof tokens !== "object" || typeof tokens.length !== "number") {
    throw new DeepGuardError("ERR_ARGUMENT", `${what} must be an array of token ids`);
  }
  const n = tokens.length;
  if (!Number.isSafeInteger(n) || n < 0 || n > MAX_TOKENS_PER_CALL) {
    throw new DeepGuardError("ERR_ARGUMENT", `${what} has length ${describe(n)}; at most ${MAX_TOKENS_PER_CALL} tokens per call`);
  }
  if (n === 0) throw new DeepGuardError("ERR_ARGUMENT", `${what} is empty`);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const id = tokens[i];
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new DeepGuardError("ERR_TOKEN_ID", `${what}[${i}] = ${describe(id)} is not a token id in [0, ${vocabSize})`);
    }
    out[i] = id;
  }
  return out;
}

/** A FIFO lock: run() calls execute one after another. */
class Queue {
  #tail: Promise<void> = Promise.resolve();
  async acquire(): Promise<() => void> {
    let release!: () => void;
    const prev = this.#tail;
    this.#tail = new Promise<void>((r) => (release = r));
    await prev;
    return release;
  }
}

export class ModelSession {
  /** @internal */ readonly native: NativeSession;
  /** @internal */ readonly queue = new Queue();
  readonly #scheduler: Scheduler;
  readonly #shape: EngineShape;

  /** @internal Use Model.createSession(). */
  constructor(engine: NativeModel, scheduler: Scheduler, shape: EngineShape) {
    this.#scheduler = scheduler;
    this.#shape = shape;
    this.native = engine.createSession();
  }

  /** Tokens held in the KV cache. */
  get length(): number {
    return this.native.length;
  }

  /** Bytes of native memory the KV cache holds. */
  get cacheBytes(): number {
    return this.native.cacheBytes;
  }

  /** Appends tokens and returns their logits / hidden states. */
  async eval(tokens: ArrayLike<number>, options: EvalOptions = {}): Promise<EvalResult> {
    const [result] = await evalBatch(this.#scheduler, this.#shape, [{ session: this, tokens }], options);
    return result;
  }

  /** Frees the KV cache now (otherwise it goes with garbage collection); later calls throw ERR_DISPOSED. */
  dispose(): void {
    this.native.dispose();
  }

  /** Forgets every position >= n, e.g. to reuse a shared prompt. */
  async truncate(n: number): Promise<void> {
    const release = await this.queue.acquire();
    try {
      if (!Number.isInteger(n) || n < 0 || n > this.length) {
        throw new DeepGuardError("ERR_ARGUMENT", `truncate(${describe(n)}): must be an integer in [0, ${this.length}]`);
      }
      this.native.truncate(n);
    } finally {
      release();
    }
  }
}

/**
 * Appends tokens to several sessions through the scheduler: admitted together,
 * they are stepped in the same batched iterations (weights read once for all),
 * alongside whatever else the model is serving. Long inputs are prefilled in
 * chunks; an abort takes effect within one scheduler iteration and leaves every
 * session of the batch as it was.
 */
export async function evalBatch(
  scheduler: Scheduler,
  shape: EngineShape,
  items: readonly { session: ModelSession; tokens: ArrayLike<number> }[],
  options: EvalOptions,
): Promise<EvalResult[]> {
  const { logits, hiddenStates, adapter, signal } = parseOptions(evalOptionsSchema, options, "eval");
  throwIfAborted(signal, "eval");
  const capture = resolveHiddenStates(hiddenStates, shape.numLayers);
  if (!Array.isArray(items) || items.length === 0) throw new DeepGuardError("ERR_ARGUMENT", "evalBatch needs at least one session");
  // Everything is checked before any session's lock is taken: a bad item must
  // not leave the good ones locked.
  items.forEach((it, i) => {
    if (it === null || typeof it !== "object" || !(it.session instanceof ModelSession)) {
      throw new DeepGuardError("ERR_ARGUMENT", `batch[${i}] must be { session: ModelSession, tokens }`);
    }
  });
  if (new Set(items.map((i) => i.session)).size !== items.length) {
    throw new DeepGuardError("ERR_ARGUMENT", "a session appears twice in one batch");
  }
  const tokens = items.map((it, i) =>
    toTokenArray(it.tokens, shape.vocabSize, items.length > 1 ? `batch[${i}].tokens` : "tokens"),
  );
  // Join every session's queue synchronously, so two batches over the same
  // sessions are ordered the same way in each queue and cannot deadlock.
  const releases = await Promise.all(items.map((it) => it.session.queue.acquire()));
  const lengths = items.map((it) => it.session.native.length);
  try {
    let out;
    try {
      out = await scheduler.evalAll(
        items.map((it, i) => ({ kind: "eval", session: it.session.native, tokens: tokens[i], logits, capture, adapter })),
        signal,
      );
    } catch (err) {
      // The failed requests were rolled back natively; roll back the others too.
      items.forEach((it, i) => {
        if (it.session.native.length > lengths[i]) it.session.native.truncate(lengths[i]);
      });
      throw wrapNativeError(err);
    }
    return tokens.map((t, i) => {
      const rows = logits === "all" ? t.length : logits === "last" ? 1 : 0;
      const hiddenStates = new Map<number, Matrix>();
      const hidden = out[i].hidden;
      const block = t.length * shape.hiddenSize;
      capture.forEach((layer, c) => {
        hiddenStates.set(layer, new Matrix(hidden.subarray(c * block, (c + 1) * block), t.length, shape.hiddenSize));
      });
      return { logits: new Matrix(out[i].logits, rows, shape.vocabSize), hiddenStates };
    });
  } finally {
    for (const r of releases) r();
  }
}
