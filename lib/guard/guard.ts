/**
 * The guard: a multi-layer aggregator over a base model's hidden states and the
 * security analyzer that scores every token (DESIGN.md "Security modules").
 * Every loop over tensor elements runs natively (native/guard), one call per
 * batch of sequences; parameters are Float32Arrays owned here, updated in place.
 *
 *   const guard = Guard.create(model, { layers: [-4, -3, -2, -1], aggregation: "attention", seed: 1 });
 *   const { sequence, tokens } = await guard.score(model.tokenize(code));
 *   const many = await guard.scoreHidden([{ ids, hidden: [h17, h18, h19, h20] }, ...]); // no model forward
 */
import { z } from "zod";
import { DeepGuardError, wrapNativeError } from "../errors.js";
import { DEFAULT_GUARD_DIR, requireDefaultFolder } from "../model/default-model.js";
import type { Dataset } from "../data/dataset.js";
import type { Model } from "../model/model.js";
import type { GuardFitOptions, GuardFitResult, GuardValidation } from "./fit.js";
import { toTokenArray } from "../model/session.js";
import { native } from "../native.js";
import type { NativeGuardSpec, NativeGuardTape } from "../native-types.js";
import { Random } from "../random.js";
import { parseOptions } from "../validate.js";

export type Aggregation = "attention" | "mean" | "last" | "weighted";
export const AGGREGATIONS: readonly Aggregation[] = ["attention", "mean", "last", "weighted"];

/** Analyzer sizes (DESIGN.md): token embedding width and the three hidden widths. */
export const ANALYZER_SIZES = { embedding: 128, hidden: [512, 256, 128] as const, dropout: 0.1 } as const;

export interface GuardCreateOptions {
  /** Hidden-state indices 0..L (negatives count from the end, -1 = after the final norm). */
  layers: number[];
  aggregation?: Aggregation;
  seed?: number;
}

export interface HiddenBatchItem {
  /** The sequence's token ids, length T. */
  ids: Int32Array;
  /** One [T * hiddenSize] row-major array per guard layer, in guard.layers order. */
  hidden: Float32Array[];
}

export interface GuardScore {
  /** Mean of the token scores. */
  sequence: number;
  /** Per-token scores in (0, 1). */
  tokens: Float32Array;
}

export interface ForwardTrainResult {
  scores: number[];
  tokens: Float32Array[];
  /** From d(loss)/d(sequence score) per item: accumulates parameter gradients, returns d(loss)/d(hidden). */
  backward(dSequence: number[]): Promise<{ dHidden: Float32Array[][] }>;
}

export const aggregationSchema = z.enum(["attention", "mean", "last", "weighted"], {
  error: (i) => `unknown aggregation ${JSON.stringify(i.input)} (attention, mean, last or weighted)`,
});
const seedSchema = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const createSchema = z
  .object({
    layers: z.array(z.number().int()).min(1).max(1024),
    aggregation: aggregationSchema.default("attention"),
    seed: seedSchema.default(0),
  })
  .strict();
const trainOptionsSchema = z.object({ train: z.boolean(), seed: seedSchema }).strict();
const loadDefaultSchema = z.object({ adapter: z.boolean().default(true) }).strict();

/** The shape of every parameter, by guard.safetensors name, for a model of hidden size d. */
export function parameterShapes(hiddenSize: number, layers: number, vocabSize: number, aggregation: Aggregation): Record<string, number[]> {
  const d = hiddenSize;
  const E = ANALYZER_SIZES.embedding;
  const [h1, h2, h3] = ANALYZER_SIZES.hidden;
  const out: Record<string, number[]> = {};
  if (aggregation === "attention") {
    for (const p of ["query", "key", "value", "output"]) {
      out[`aggregator.${p}.weight`] = [d, d];
      out[`aggregator.${p}.bias`] = [d];
    }
  }
  if (aggregation === "weighted") out["aggregator.layer_logits"] = [layers];
  out["analyzer.token_embedding.weight"] = [vocabSize, E];
  Object.assign(out, {
    "analyzer.fc1.weight": [h1, d + E],
    "analyzer.fc1.bias": [h1],
    "analyzer.ln1.weight": [h1],
    "analyzer.ln1.bias": [h1],
    "analyzer.fc2.weight": [h2, h1],
    "analyzer.fc2.bias": [h2],
    "analyzer.ln2.weight": [h2],
    "analyzer.ln2.bias": [h2],
    "analyzer.fc3.weight": [h3, h2],
    "analyzer.fc3.bias": [h3],
    "analyzer.fc4.weight": [1, h3],
    "analyzer.fc4.bias": [1],
  });
  return out;
}

/** Resolves hidden-state indices against an L-layer model: in [-(L+1), L], no repeats. */
export function resolveGuardLayers(layers: readonly number[], numLayers: number): number[] {
  const out: number[] = [];
  for (const raw of layers) {
    if (!Number.isInteger(raw) || raw < -(numLayers + 1) || raw > numLayers) {
      throw new DeepGuardError("ERR_ARGUMENT", `guard layer ${String(raw)} is out of range [${-(numLayers + 1)}, ${numLayers}] for a ${numLayers}-layer model`);
    }
    const r = raw < 0 ? numLayers + 1 + raw : raw;
    if (out.includes(r)) throw new DeepGuardError("ERR_ARGUMENT", `guard layer ${raw} repeats hidden state ${r}`);
    out.push(r);
  }
  return out;
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** PyTorch defaults: Linear U(+-1/sqrt(in)) for weight and bias, LayerNorm (1, 0), Embedding N(0, 1); layer logits 0. */
function initialParameters(shapes: Record<string, number[]>, seed: number): Record<string, Float32Array> {
  const rng = new Random(seed);
  const out: Record<string, Float32Array> = {};
  for (const [name, shape] of Object.entries(shapes)) {
    const a = new Float32Array(numel(shape));
    if (/\.ln\d\.weight$/.test(name)) a.fill(1);
    else if (/\.ln\d\.bias$/.test(name) || name === "aggregator.layer_logits") a.fill(0);
    else if (name === "analyzer.token_embedding.weight") {
      for (let i = 0; i < a.length; i += 2) {
        // Box-Muller: two standard normals per pair of uniforms.
        const u = 1 - rng.nextDouble(), v = rng.nextDouble();
        const r = Math.sqrt(-2 * Math.log(u));
        a[i] = r * Math.cos(2 * Math.PI * v);
        if (i + 1 < a.length) a[i + 1] = r * Math.sin(2 * Math.PI * v);
      }
    } else {
      const fanIn = name.endsWith(".weight") ? shape[1] : shapes[name.replace(/\.bias$/, ".weight")][1];
      const bound = 1 / Math.sqrt(fanIn);
      for (let i = 0; i < a.length; i++) a[i] = (2 * rng.nextDouble() - 1) * bound;
    }
    out[name] = a;
  }
  return out;
}

/** What a Guard is made of; Guard.load and Guard.create both build one. @internal */
export interface GuardState {
  layers: number[];
  aggregation: Aggregation;
  params: Record<string, Float32Array>;
  tokenStats: Float32Array;
}

export class Guard {
  readonly model: Model;
  readonly layers: readonly number[];
  readonly aggregation: Aggregation;
  /** [vocab] token security statistics (DESIGN.md): +0.01 per secure token, -0.01 per vulnerable, in [-1, 1]. */
  readonly tokenStats: Float32Array;
  readonly #params: Record<string, Float32Array>;
  readonly #grads: Record<string, Float32Array>;
  readonly #spec: NativeGuardSpec;
  #gradQueue: Promise<void> = Promise.resolve();

  /** @internal Use Guard.create or Guard.load. */
  constructor(model: Model, state: GuardState) {
    this.model = model;
    this.layers = Object.freeze([...state.layers]);
    this.aggregation = state.aggregation;
    this.tokenStats = state.tokenStats;
    this.#params = state.params;
    this.#grads = Object.fromEntries(Object.entries(state.params).map(([k, v]) => [k, new Float32Array(v.length)]));
    this.#spec = {
      hiddenSize: model.config.hiddenSize,
      layers: state.layers.length,
      vocabSize: model.config.vocabSize,
      aggregation: state.aggregation,
      dropout: ANALYZER_SIZES.dropout,
    };
  }

  /** A new guard with seeded PyTorch-style initial weights. */
  static create(model: Model, options: GuardCreateOptions): Guard {
    const o = parseOptions(createSchema, options, "Guard.create");
    const layers = resolveGuardLayers(o.layers, model.config.numLayers);
    const shapes = parameterShapes(model.config.hiddenSize, layers.length, model.config.vocabSize, o.aggregation);
    return new Guard(model, {
      layers,
      aggregation: o.aggregation,
      params: initialParameters(shapes, o.seed),
      tokenStats: new Float32Array(model.config.vocabSize),
    });
  }

  /** Loads guard.json + guard.safetensors from `dir`, checking that they were made for `model`. */
  static async load(dir: string, model: Model): Promise<Guard> {
    const { loadGuardFiles } = await import("./guard-files.js");
    return new Guard(model, await loadGuardFiles(dir, model));
  }

  /**
   * The default model's trained guard (models/default/guard/), checked against
   * `model` (ERR_GUARD_MISMATCH for any other base model). Unless
   * `{ adapter: false }`, also attaches the LoRA adapter trained with it, so
   * that `new Generator(model, guard)` decodes as DeepGuard does.
   */
  static async loadDefault(model: Model, options?: { adapter?: boolean }): Promise<Guard> {
    const { adapter } = parseOptions(loadDefaultSchema, options, "Guard.loadDefault");
    const dir = await requireDefaultFolder(DEFAULT_GUARD_DIR, "guard.json");
    const guard = await Guard.load(dir, model);
    if (adapter) await model.loadAdapter(dir);
    return guard;
  }

  /** Writes guard.json and guard.safetensors into `dir` (created if needed), each atomically. */
  async save(dir: string): Promise<void> {
    const { saveGuardFiles } = await import("./guard-files.js");
    await saveGuardFiles(dir, this.model, {
      layers: [...this.layers],
      aggregation: this.aggregation,
      params: this.#params,
      tokenStats: this.tokenStats,
    });
  }

  /**
   * Trains aggregator and analyzer on SVEN pairs with the base model frozen
   * (lib/guard/fit.ts: margin + BCE loss, AdamW, warmup + decay, clipping,
   * validation each epoch); accumulates the token security statistics.
   */
  async fit(train: Dataset, options?: GuardFitOptions): Promise<GuardFitResult> {
    const { fitGuard } = await import("./fit.js");
    return fitGuard(this, train, options);
  }

  /** Pair accuracy, mean scores and margin loss on `data` (lib/guard/fit.ts evaluateGuard). */
  async evaluate(data: Dataset, options?: { margin?: number; batchSize?: number; adapter?: boolean }): Promise<GuardValidation> {
    const { evaluateGuard } = await import("./fit.js");
    return evaluateGuard(this, data, options);
  }

  /** Parameter shapes by name (guard.safetensors layout). */
  shapes(): Record<string, number[]> {
    return parameterShapes(this.#spec.hiddenSize, this.#spec.layers, this.#spec.vocabSize, this.aggregation);
  }

  /**
   * Live parameter arrays, updated in place by an optimizer. Native calls read
   * them while they run: await an optimizer step before scoring or training on.
   */
  parameters(): Record<string, Float32Array> {
    return { ...this.#params };
  }

  /** Live gradient arrays (same names and lengths), accumulated by backward(). */
  gradients(): Record<string, Float32Array> {
    return { ...this.#grads };
  }

  zeroGrad(): void {
    for (const g of Object.values(this.#grads)) g.fill(0);
  }

  /** Runs one model forward capturing guard.layers, then scores every token. */
  async score(ids: Int32Array | readonly number[]): Promise<GuardScore> {
    return scoreIds(this, ids);
  }

  /**
   * A frozen copy of this guard for inference (guided decoding, scanning): the
   * same scores as scoreHidden up to float rounding, faster because the
   * attention aggregator is folded into fc1 once (one d x d and one 512 x d
   * product per token instead of four d x d and one 512 x d; see
   * native/guard/guard.h). Later changes to this guard's parameters do not reach it.
   */
  async scorer(): Promise<GuardScorer> {
    const params = Object.fromEntries(Object.entries(this.#params).map(([k, v]) => [k, v.slice()]));
    let fused: Record<string, Float32Array> | undefined;
    if (this.aggregation === "attention") {
      try {
        fused = await native().guardFuse(this.#spec, params);
      } catch (err) {
        throw wrapNativeError(err);
      }
    }
    return new GuardScorer(this.model, this.layers, this.aggregation, this.#spec, params, fused);
  }

  /** Scores many sequences from captured hidden states in one native call (no model forward). */
  async scoreHidden(batch: HiddenBatchItem[]): Promise<GuardScore[]> {
    const checked = checkBatch(this.#spec, batch, "Guard.scoreHidden");
    const r = await this.#forward(checked, false, 0, false);
    return r.tokens.map((tokens) => ({ sequence: mean(tokens), tokens }));
  }

  /**
   * Training forward (dropout when `train`), keeping the activations for one
   * backward. Sequence score = mean of token scores, so d/d(token) = d/d(sequence) / T.
   */
  async forwardTrain(batch: HiddenBatchItem[], options: { train: boolean; seed: number }): Promise<ForwardTrainResult> {
    const o = parseOptions(trainOptionsSchema, options, "Guard.forwardTrain");
    const checked = checkBatch(this.#spec, batch, "Guard.forwardTrain");
    const r = await this.#forward(checked, o.train, o.seed, true);
    // Released after the backward, so the activations can be collected.
    let tape: NativeGuardTape | undefined = r.tape!;
    let used = false;
    return {
      scores: r.tokens.map(mean),
      tokens: r.tokens,
      backward: async (dSequence: number[]) => {
        if (used) throw new DeepGuardError("ERR_ARGUMENT", "forwardTrain: backward() may run once per forward");
        if (!Array.isArray(dSequence) || dSequence.length !== checked.length || !dSequence.every(Number.isFinite)) {
          throw new DeepGuardError("ERR_ARGUMENT", `forwardTrain backward: dSequence must hold ${checked.length} finite numbers`);
        }
        used = true;
        const dTokens = r.tokens.map((t, i) => new Float32Array(t.length).fill(dSequence[i] / t.length));
        try {
          // Backward passes accumulate into the same gradient arrays: one at a time.
          const run = this.#gradQueue.then(() => native().guardBackward(this.#spec, this.#params, this.#grads, tape!, dTokens));
          this.#gradQueue = run.then(() => undefined, () => undefined);
          const dHidden = await run;
          tape = undefined;
          return { dHidden };
        } catch (err) {
          throw wrapNativeError(err);
        }
      },
    };
  }

  /** Adds +0.01 for every token of the secure side and -0.01 for the vulnerable side, clamped to [-1, 1]. */
  updateTokenStats(pair: { secure: Int32Array; vulnerable: Int32Array }): void {
    const vocab = this.tokenStats.length;
    for (const [ids, delta] of [[pair.secure, 0.01], [pair.vulnerable, -0.01]] as const) {
      const checked = toTokenArray(ids, vocab, "ids");
      for (const id of checked) this.tokenStats[id] = Math.max(-1, Math.min(1, this.tokenStats[id] + delta));
    }
  }

  async #forward(batch: HiddenBatchItem[], train: boolean, seed: number, keepTape: boolean) {
    try {
      return await native().guardForward(this.#spec, this.#params, batch, { train, seed, keepTape });
    } catch (err) {
      throw wrapNativeError(err);
    }
  }
}

/** Frozen inference copy of a Guard (Guard.scorer()). */
export class GuardScorer {
  readonly #spec: NativeGuardSpec;
  readonly #params: Record<string, Float32Array>;
  readonly #fused: Record<string, Float32Array> | undefined;

  /** @internal Use Guard.scorer(). */
  constructor(
    readonly model: Model,
    readonly layers: readonly number[],
    readonly aggregation: Aggregation,
    spec: NativeGuardSpec,
    params: Record<string, Float32Array>,
    fused: Record<string, Float32Array> | undefined,
  ) {
    this.#spec = spec;
    this.#params = params;
    this.#fused = fused;
  }

  async score(ids: Int32Array | readonly number[]): Promise<GuardScore> {
    return scoreIds(this, ids);
  }

  /** Scores many sequences from captured hidden states in one native call. */
  async scoreHidden(batch: HiddenBatchItem[]): Promise<GuardScore[]> {
    const checked = checkBatch(this.#spec, batch, "GuardScorer.scoreHidden");
    try {
      const r = await native().guardForward(this.#spec, this.#params, checked, {
        train: false,
        seed: 0,
        keepTape: false,
        ...(this.#fused ? { fused: this.#fused } : {}),
      });
      return r.tokens.map((tokens) => ({ sequence: mean(tokens), tokens }));
    } catch (err) {
      throw wrapNativeError(err);
    }
  }
}

async function scoreIds(g: Guard | GuardScorer, ids: Int32Array | readonly number[]): Promise<GuardScore> {
  const tokens = toTokenArray(ids, g.model.config.vocabSize, "ids");
  if (tokens.length === 0) throw new DeepGuardError("ERR_ARGUMENT", "score: ids is empty");
  const out = await g.model.forward(tokens, { logits: "none", hiddenStates: [...g.layers] });
  const hidden = g.layers.map((l) => out.hiddenStates.get(l)!.data);
  const [s] = await g.scoreHidden([{ ids: tokens, hidden }]);
  return s;
}

function checkBatch(spec: NativeGuardSpec, batch: HiddenBatchItem[], what: string): HiddenBatchItem[] {
  if (!Array.isArray(batch) || batch.length === 0) throw new DeepGuardError("ERR_ARGUMENT", `${what}: batch must be a non-empty array`);
  const d = spec.hiddenSize;
  batch.forEach((item, i) => {
    if (!(item?.ids instanceof Int32Array)) throw new DeepGuardError("ERR_ARGUMENT", `${what}: batch[${i}].ids must be an Int32Array`);
    if (item.ids.length === 0) throw new DeepGuardError("ERR_ARGUMENT", `${what}: batch[${i}] has no tokens`);
    toTokenArray(item.ids, spec.vocabSize, `batch[${i}].ids`);
    if (!Array.isArray(item.hidden) || item.hidden.length !== spec.layers) {
      throw new DeepGuardError("ERR_ARGUMENT", `${what}: batch[${i}].hidden must hold ${spec.layers} arrays, one per guard layer`);
    }
    item.hidden.forEach((h, l) => {
      if (!(h instanceof Float32Array) || h.length !== item.ids.length * d) {
        throw new DeepGuardError("ERR_ARGUMENT", `${what}: batch[${i}].hidden[${l}] must be a Float32Array of ${item.ids.length} x ${d} values`);
      }
    });
  });
  return batch;
}

function mean(a: Float32Array): number {
  let s = 0;
  for (const v of a) s += v;
  return s / a.length;
}

export type { NativeGuardTape };
