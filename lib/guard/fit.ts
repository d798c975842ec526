/**
 * Training the guard (aggregator + analyzer) on a frozen base model
 * (issue 5 / DESIGN.md "Loss", the guard's part of it): per pair
 *
 *   L = marginWeight * relu(margin - (s(secure) - s(vulnerable)))
 *     + bceWeight * (BCE(s(secure), 1) + BCE(s(vulnerable), 0)) / 2
 *
 * averaged over the pairs of a batch; AdamW with linear warmup and cosine decay,
 * global-norm clipping, validation after every epoch. The base is frozen, so its
 * hidden states are computed once per pair side and reused every epoch
 * (cacheHidden). Seeded: the same seed gives the same batches, dropout masks and
 * weights.
 */
import { z } from "zod";
import { DeepGuardError, throwIfAborted } from "../errors.js";
import type { Dataset, SvenPair } from "../data/dataset.js";
import type { Model } from "../model/model.js";
import { deriveSeed } from "../random.js";
import { AdamW, clipGradNorm } from "../train/optimizer.js";
import { learningRate } from "../train/schedule.js";
import { parseOptions, signalSchema } from "../validate.js";
import type { Guard, HiddenBatchItem } from "./guard.js";

export interface GuardStepInfo {
  epoch: number;
  /** 0-based optimizer step over the whole run. */
  step: number;
  totalSteps: number;
  loss: number;
  lr: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
}

export interface GuardValidation {
  pairs: number;
  /** Mean relu(margin - (s(secure) - s(vulnerable))). */
  marginLoss: number;
  /** Mean of (BCE(s(secure), 1) + BCE(s(vulnerable), 0)) / 2. */
  bce: number;
  /** Fraction of pairs with s(secure) > s(vulnerable). */
  pairAccuracy: number;
  meanSecure: number;
  meanVulnerable: number;
}

export interface GuardEpochInfo {
  epoch: number;
  trainLoss: number;
  val: GuardValidation | null;
}

export interface GuardFitOptions {
  /** Validation pairs, scored after every epoch (and before the first, as epoch -1 in `initialVal`). */
  val?: Dataset;
  epochs?: number;
  lr?: number;
  /** Pairs per optimizer step (default 8). */
  batchSize?: number;
  seed?: number;
  margin?: number;
  /** Weight of the margin term (default 1). */
  marginWeight?: number;
  /**
   * Weight of the per-sequence BCE (default 0.1). A pair's two sides share most
   * of their tokens, so BCE alone pulls both scores toward 0.5; the margin term
   * is what separates them, and a large BCE weight slows that down.
   */
  bceWeight?: number;
  weightDecay?: number;
  /** Fraction of the steps spent in linear warmup (default 0.1). */
  warmupRatio?: number;
  decay?: "cosine" | "linear" | "constant";
  /** Global gradient-norm clip (default 1; Infinity: off). */
  maxGradNorm?: number;
  /**
   * Keep the frozen base's hidden states in memory across epochs (default true):
   * one forward per function for the whole run, at tokens x layers x hidden x 4
   * bytes (SVEN train at 1024 tokens on a 1.5B model: several GB); false runs the
   * base again every epoch.
   */
  cacheHidden?: boolean;
  onStep?: (info: GuardStepInfo) => void;
  onEpoch?: (info: GuardEpochInfo) => void;
  signal?: AbortSignal;
}

export interface GuardFitResult {
  initialVal: GuardValidation | null;
  epochs: GuardEpochInfo[];
  steps: number;
  /** Training pairs skipped because a side has no tokens. */
  skippedPairs: number;
}

const fn = <T>() => z.custom<(x: T) => void>((v) => typeof v === "function", "must be a function");
const fitSchema = z
  .object({
    val: z.custom<Dataset>((v) => typeof (v as Dataset)?.pairs === "function", "must be a Dataset").optional(),
    epochs: z.number().int().min(1).max(10_000).default(5),
    lr: z.number().positive().finite().default(1e-3),
    batchSize: z.number().int().min(1).max(4096).default(8),
    seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0),
    margin: z.number().min(0).finite().default(0.5),
    marginWeight: z.number().min(0).finite().default(1),
    bceWeight: z.number().min(0).finite().default(0.1),
    weightDecay: z.number().min(0).finite().default(0.01),
    warmupRatio: z.number().min(0).max(1).default(0.1),
    decay: z.enum(["cosine", "linear", "constant"]).default("cosine"),
    maxGradNorm: z.number().positive().default(1),
    cacheHidden: z.boolean().default(true),
    onStep: fn<GuardStepInfo>().optional(),
    onEpoch: fn<GuardEpochInfo>().optional(),
    signal: signalSchema,
  })
  .strict();

const BCE_EPS = 1e-7;
const bce = (s: number, label: 0 | 1) => -Math.log(Math.max(BCE_EPS, label ? s : 1 - s));
/** d BCE / d s, with the same clamp as bce(). */
const dbce = (s: number, label: 0 | 1) => (label ? -1 / Math.max(BCE_EPS, s) : 1 / Math.max(BCE_EPS, 1 - s));

/** Hidden states of guard.layers for one token sequence, from one forward (the base model unless `adapter`). */
async function captureHidden(model: Model, layers: readonly number[], ids: Int32Array, adapter: boolean): Promise<Float32Array[]> {
  const out = await model.forward(ids, { logits: "none", hiddenStates: [...layers], adapter });
  return layers.map((l) => out.hiddenStates.get(l)!.data);
}

class HiddenSource {
  readonly #cache = new Map<Int32Array, Promise<Float32Array[]>>();
  constructor(readonly model: Model, readonly layers: readonly number[], readonly keep: boolean, readonly adapter = false) {}
  async item(ids: Int32Array): Promise<HiddenBatchItem> {
    let p = this.#cache.get(ids);
    if (!p) {
      p = captureHidden(this.model, this.layers, ids, this.adapter);
      if (this.keep) this.#cache.set(ids, p);
    }
    return { ids, hidden: await p };
  }
  /** secure sides first, then vulnerable, in pair order. */
  async batch(pairs: readonly SvenPair[]): Promise<HiddenBatchItem[]> {
    const out: HiddenBatchItem[] = [];
    for (const p of pairs) out.push(await this.item(p.secure.ids));
    for (const p of pairs) out.push(await this.item(p.vulnerable.ids));
    return out;
  }
}

const usable = (p: SvenPair) => p.secure.ids.length > 0 && p.vulnerable.ids.length > 0;

async function validateGuard(guard: Guard, source: HiddenSource, pairs: readonly SvenPair[], margin: number, batchSize: number): Promise<GuardValidation> {
  let marginLoss = 0, bceSum = 0, correct = 0, sumS = 0, sumV = 0;
  for (let i = 0; i < pairs.length; i += batchSize) {
    const chunk = pairs.slice(i, i + batchSize);
    const scores = await guard.scoreHidden(await source.batch(chunk));
    chunk.forEach((_, k) => {
      const s = scores[k].sequence, v = scores[chunk.length + k].sequence;
      marginLoss += Math.max(0, margin - (s - v));
      bceSum += (bce(s, 1) + bce(v, 0)) / 2;
      if (s > v) correct++;
      sumS += s;
      sumV += v;
    });
  }
  const n = Math.max(1, pairs.length);
  return { pairs: pairs.length, marginLoss: marginLoss / n, bce: bceSum / n, pairAccuracy: correct / n, meanSecure: sumS / n, meanVulnerable: sumV / n };
}

const evaluateSchema = z
  .object({
    margin: z.number().min(0).finite().default(0.5),
    batchSize: z.number().int().min(1).max(4096).default(8),
    adapter: z.boolean().default(false),
  })
  .strict();

/**
 * The guard on a dataset's pairs: pair accuracy (s(secure) > s(vulnerable)),
 * mean scores and the margin loss. Hidden states come from the base model, or
 * with the model's adapter (`adapter: true`), as a guard trained with it
 * (Trainer) sees them while guiding.
 */
export async function evaluateGuard(
  guard: Guard,
  data: Dataset,
  options: { margin?: number; batchSize?: number; adapter?: boolean } = {},
): Promise<GuardValidation> {
  const o = parseOptions(evaluateSchema, options, "Guard.evaluate");
  const pairs = (await data.pairs(guard.model)).filter(usable);
  if (pairs.length === 0) throw new DeepGuardError("ERR_DATASET_EMPTY", "Guard.evaluate: the dataset has no usable pairs");
  return validateGuard(guard, new HiddenSource(guard.model, guard.layers, false, o.adapter), pairs, o.margin, o.batchSize);
}

export async function fitGuard(guard: Guard, train: Dataset, options: GuardFitOptions = {}): Promise<GuardFitResult> {
  const o = parseOptions(fitSchema, options, "Guard.fit");
  if (typeof (train as Dataset)?.batches !== "function") throw new DeepGuardError("ERR_ARGUMENT", "Guard.fit: train must be a Dataset");
  const model = guard.model;
  const source = new HiddenSource(model, guard.layers, o.cacheHidden);
  const allTrain = await train.pairs(model);
  const skippedPairs = allTrain.filter((p) => !usable(p)).length;
  if (allTrain.length - skippedPairs === 0) throw new DeepGuardError("ERR_DATASET_EMPTY", "Guard.fit: the training set has no usable pairs");
  const valPairs = o.val ? (await o.val.pairs(model)).filter(usable) : null;
  if (valPairs && valPairs.length === 0) throw new DeepGuardError("ERR_DATASET_EMPTY", "Guard.fit: the validation set has no usable pairs");

  const epochBatches = async (epoch: number) =>
    (await train.batches(model, { batchSize: o.batchSize, seed: o.seed, epoch })).map((b) => b.filter(usable)).filter((b) => b.length > 0);
  const stepsPerEpoch = (await epochBatches(0)).length;
  const totalSteps = stepsPerEpoch * o.epochs;
  const schedule = { lr: o.lr, warmupSteps: Math.floor(o.warmupRatio * totalSteps), totalSteps, decay: o.decay };
  const params = guard.parameters();
  const optimizer = new AdamW(params, {
    weightDecay: o.weightDecay,
    // As usual for transformers: no decay on biases, norms, embeddings and the layer logits.
    noDecay: (name) => name.endsWith(".bias") || /\.ln\d\./.test(name) || name.includes("token_embedding") || name.endsWith("layer_logits"),
  });
  const gradNames = Object.keys(params);

  const initialVal = valPairs ? await validateGuard(guard, source, valPairs, o.margin, o.batchSize) : null;
  const epochs: GuardEpochInfo[] = [];
  let step = 0;
  for (let epoch = 0; epoch < o.epochs; epoch++) {
    let lossSum = 0, pairsSeen = 0;
    for (const batch of await epochBatches(epoch)) {
      throwIfAborted(o.signal, "Guard.fit");
      const items = await source.batch(batch);
      const n = batch.length;
      const fwd = await guard.forwardTrain(items, { train: true, seed: deriveSeed(o.seed, step + 1) });
      const dSeq = new Array<number>(2 * n).fill(0);
      let loss = 0;
      for (let k = 0; k < n; k++) {
        const s = fwd.scores[k], v = fwd.scores[n + k];
        const gap = o.margin - (s - v);
        loss += o.marginWeight * Math.max(0, gap) + (o.bceWeight * (bce(s, 1) + bce(v, 0))) / 2;
        if (gap > 0) {
          dSeq[k] -= o.marginWeight / n;
          dSeq[n + k] += o.marginWeight / n;
        }
        dSeq[k] += (o.bceWeight * dbce(s, 1)) / (2 * n);
        dSeq[n + k] += (o.bceWeight * dbce(v, 0)) / (2 * n);
        guard.updateTokenStats({ secure: batch[k].secure.ids, vulnerable: batch[k].vulnerable.ids });
      }
      guard.zeroGrad();
      await fwd.backward(dSeq);
      const grads = guard.gradients();
      const gradNorm = await clipGradNorm(gradNames.map((k) => grads[k]), o.maxGradNorm);
      const lr = learningRate(step, schedule);
      await optimizer.step(grads, lr);
      lossSum += loss;
      pairsSeen += n;
      o.onStep?.({ epoch, step, totalSteps, loss: loss / n, lr, gradNorm });
      step++;
    }
    const val = valPairs ? await validateGuard(guard, source, valPairs, o.margin, o.batchSize) : null;
    const info = { epoch, trainLoss: lossSum / Math.max(1, pairsSeen), val };
    epochs.push(info);
    o.onEpoch?.(info);
  }
  return { initialVal, epochs, steps: step, skippedPairs };
}
