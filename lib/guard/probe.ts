/**
 * Layer-wise linear probing: where in the model do vulnerability cues live?
 *
 *   const report = await probeLayers(model, dataset, { folds: 5, seed: 1 });
 *   report.layers;            // [{ layer, accuracy, accuracyStd, auc, aucStd }] for hidden states 0..L
 *   report.recommendedLayers; // the band of upper layers to aggregate
 *
 * One forward pass per function captures all L+1 hidden states (the tokenizer's
 * special prefix such as BOS goes first and is not pooled); each is pooled to
 * one vector per function (mean over all tokens, or over the tokens the fix
 * changed). Per layer, a standardized L2-regularized logistic regression separates
 * secure (label 1) from vulnerable (label 0) functions under k-fold cross-validation
 * grouped by pair: both versions of a fix are always in the same fold, so a probe
 * never sees the twin of a function it is tested on.
 */
import { z } from "zod";
import { DeepGuardError, throwIfAborted } from "../errors.js";
import type { Dataset, SvenPair } from "../data/dataset.js";
import type { Model } from "../model/model.js";
import type { Matrix } from "../model/tensor.js";
import { deriveSeed, Random, shuffleInPlace } from "../random.js";
import { parseOptions, signalSchema } from "../validate.js";
import { accuracy, decisionValues, fitLogistic, rocAuc } from "./logistic.js";

export type Pooling = "mean" | "changed";

export interface ProbeProgress {
  phase: "forward" | "fit";
  /** Functions run (forward) or layers fitted (fit) so far. */
  done: number;
  total: number;
}

export interface ProbeOptions {
  /** Cross-validation folds, 2..pairs (default 5). */
  folds?: number;
  /** Seeds the assignment of pairs to folds (default 0). */
  seed?: number;
  /** "mean" (default): mean over all tokens; "changed": mean over the tokens the fix changed (all tokens where none changed). */
  pooling?: Pooling;
  /** L2 strength lambda of the logistic regression (scikit-learn's 1 / C; default 1). */
  l2?: number;
  /** Layers in the recommended band at most (default 4). */
  bandSize?: number;
  onProgress?: (progress: ProbeProgress) => void;
  signal?: AbortSignal;
}

export interface LayerResult {
  /** Hidden-state index: 0 = embeddings, i = output of layer i, L = after the final norm. */
  layer: number;
  /** Mean over folds. */
  accuracy: number;
  /** Sample standard deviation over folds. */
  accuracyStd: number;
  auc: number;
  aucStd: number;
}

export interface ProbeReport {
  model: { directory: string; architecture: string; numLayers: number; hiddenSize: number };
  dataset: { source: string; pairs: number; functions: number; tokens: number; cweCounts: Record<string, number> };
  options: { folds: number; seed: number; pooling: Pooling; l2: number; bandSize: number };
  layers: LayerResult[];
  bestLayer: number;
  bestAuc: number;
  /** Best AUC minus the last hidden state's AUC: how much the final layers lose. */
  finalLayerDrop: number;
  recommendedLayers: number[];
  /** The rule that chose recommendedLayers, in words. */
  bandRule: string;
  /** Functions pooled over all tokens under "changed" pooling because none of their tokens changed. */
  changedFallbacks: number;
  /** Special token ids (e.g. BOS) each forward pass started with; they are not pooled. */
  prefixTokens: number[];
  /** Logistic-regression fits that stopped at the iteration limit before converging. */
  unconvergedFits: number;
  /**
   * forwardSeconds: wall time of all forward passes with the pooling (poolSeconds of it on the
   * JavaScript thread, overlapped with the next forward); fitSeconds: all logistic fits.
   */
  timings: { forwardSeconds: number; poolSeconds: number; fitSeconds: number; totalSeconds: number; tokensPerSecond: number };
}

export const BAND_RULE =
  "Among the upper half of hidden states (ceil(L/2)..L), take the layer b with the best mean AUC (ties: the higher layer); " +
  "grow a contiguous band from b, each time adding the neighbour (above or below) with the higher AUC, while that AUC is " +
  "at least AUC(b) - max(0.01, aucStd(b)) and the band has fewer than bandSize layers.";

const optionsSchema = z
  .object({
    folds: z.number().int().min(2).default(5),
    seed: z.number().int().refine(Number.isSafeInteger, "must be a safe integer").default(0),
    pooling: z.enum(["mean", "changed"]).default("mean"),
    l2: z.number().positive().finite().default(1),
    bandSize: z.number().int().positive().default(4),
    onProgress: z.function().optional(),
    signal: signalSchema,
  })
  .strict();

/** Pooled features of every function for every hidden state: features[l] is [functions][hidden], row 2p vulnerable, 2p + 1 secure. */
export interface ProbeFeatures {
  features: Float32Array[];
  hidden: number;
  tokens: number;
  changedFallbacks: number;
  /** Special token ids put before every function (see specialPrefix); not pooled. */
  prefix: number[];
  /** Wall time of the forward passes, pooling included (it overlaps the next forward). */
  forwardSeconds: number;
  /** Time spent pooling on the JavaScript thread. */
  poolSeconds: number;
}

/**
 * Mean of the rows of `m` from `skip` on where `mask` (indexed from `skip`) is 1, or of all of them
 * when mask is null, written to out[offset..offset + cols).
 */
function poolRows(m: Matrix, skip: number, mask: Uint8Array | null, out: Float32Array, offset: number): void {
  const { cols, rows, data } = m;
  const acc = new Float64Array(cols);
  let count = 0;
  for (let t = skip; t < rows; t++) {
    if (mask && !mask[t - skip]) continue;
    count++;
    const base = t * cols;
    for (let j = 0; j < cols; j++) acc[j] += data[base + j];
  }
  for (let j = 0; j < cols; j++) out[offset + j] = acc[j] / count;
}

/**
 * The special tokens the tokenizer puts before a text (e.g. Llama's BOS; none for
 * Qwen2): the model was trained to see them first, so the forward passes get them
 * too, and pooling leaves them out. Found by encoding a sample with and without
 * special tokens.
 */
export function specialPrefix(model: Model): number[] {
  const sample = "int x = 0;";
  const withSpecial = model.tokenize(sample, { addSpecialTokens: true });
  const plain = model.tokenize(sample, { addSpecialTokens: false });
  for (let k = 0; k + plain.length <= withSpecial.length; k++) {
    if (plain.every((id, i) => withSpecial[k + i] === id)) return withSpecial.slice(0, k);
  }
  return [];
}

/** Runs one forward per function (after the tokenizer's special prefix) and pools every hidden state. */
export async function extractFeatures(
  model: Model,
  pairs: readonly SvenPair[],
  pooling: Pooling,
  onProgress?: (p: ProbeProgress) => void,
  signal?: AbortSignal,
): Promise<ProbeFeatures> {
  const L = model.config.numLayers;
  const hidden = model.config.hiddenSize;
  const functions = pairs.length * 2;
  const features = Array.from({ length: L + 1 }, () => new Float32Array(functions * hidden));
  const sides = pairs.flatMap((p) => [p.vulnerable, p.secure]);
  const prefix = specialPrefix(model);
  let tokens = 0;
  let changedFallbacks = 0;
  let poolMs = 0;
  const started = performance.now();
  // The next forward runs on the native threads while this one is pooled here.
  const input = (ids: Int32Array) => {
    if (prefix.length === 0) return ids;
    const out = new Int32Array(prefix.length + ids.length);
    out.set(prefix);
    out.set(ids, prefix.length);
    return out;
  };
  const run = (i: number) => model.forward(input(sides[i].ids), { hiddenStates: "all", logits: "none", signal });
  let pending = functions > 0 ? run(0) : undefined;
  for (let i = 0; i < functions; i++) {
    throwIfAborted(signal, "probeLayers");
    const out = await pending!;
    pending = i + 1 < functions ? run(i + 1) : undefined;
    pending?.catch(() => undefined); // handled when awaited; avoids an unhandled rejection if we stop first
    const side = sides[i];
    let mask: Uint8Array | null = null;
    if (pooling === "changed") {
      if (side.changed.some((v) => v === 1)) mask = side.changed;
      else changedFallbacks++;
    }
    const poolStarted = performance.now();
    for (let l = 0; l <= L; l++) poolRows(out.hiddenStates.get(l)!, prefix.length, mask, features[l], i * hidden);
    poolMs += performance.now() - poolStarted;
    tokens += side.ids.length;
    onProgress?.({ phase: "forward", done: i + 1, total: functions });
  }
  return { features, hidden, tokens, changedFallbacks, prefix, forwardSeconds: (performance.now() - started) / 1000, poolSeconds: poolMs / 1000 };
}

/** Fold of each pair: pairs shuffled with the seed, then dealt round-robin, so fold sizes differ by at most one. */
export function pairFolds(pairCount: number, folds: number, seed: number): Int32Array {
  const order = shuffleInPlace(
    Array.from({ length: pairCount }, (_, i) => i),
    new Random(deriveSeed(seed, 0x70726f62)), // "prob"
  );
  const fold = new Int32Array(pairCount);
  order.forEach((pair, k) => (fold[pair] = k % folds));
  return fold;
}

/** Rows (functions: 2p vulnerable, 2p + 1 secure) in fold `f` and outside it. */
export function foldRows(fold: Int32Array, f: number): { train: number[]; test: number[] } {
  const train: number[] = [];
  const test: number[] = [];
  for (let r = 0; r < fold.length * 2; r++) (fold[r >> 1] === f ? test : train).push(r);
  return { train, test };
}

function meanStd(values: number[]): { mean: number; std: number } {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const variance = values.length > 1 ? values.reduce((a, v) => a + (v - mean) ** 2, 0) / (values.length - 1) : 0;
  return { mean, std: Math.sqrt(variance) };
}

/**
 * Cross-validated probe of one layer's features (rows: functions, 2 per pair).
 * Features are standardized with the training folds' mean and standard deviation.
 */
export function probeLayer(
  features: Float32Array,
  hidden: number,
  fold: Int32Array,
  folds: number,
  l2: number,
): { accuracy: number[]; auc: number[]; unconverged: number } {
  const acc: number[] = [];
  const aucs: number[] = [];
  let unconverged = 0;
  for (let f = 0; f < folds; f++) {
    const { train: trainRows, test: testRows } = foldRows(fold, f);
    const mean = new Float64Array(hidden);
    const scale = new Float64Array(hidden);
    for (const r of trainRows) for (let j = 0; j < hidden; j++) mean[j] += features[r * hidden + j];
    for (let j = 0; j < hidden; j++) mean[j] /= trainRows.length;
    for (const r of trainRows) for (let j = 0; j < hidden; j++) scale[j] += (features[r * hidden + j] - mean[j]) ** 2;
    for (let j = 0; j < hidden; j++) {
      const sd = Math.sqrt(scale[j] / trainRows.length);
      scale[j] = sd > 1e-12 ? 1 / sd : 0; // a constant feature carries nothing
    }
    const standardized = (rows: number[]) => {
      const x = new Float64Array(rows.length * hidden);
      rows.forEach((r, i) => {
        for (let j = 0; j < hidden; j++) x[i * hidden + j] = (features[r * hidden + j] - mean[j]) * scale[j];
      });
      return x;
    };
    const label = (rows: number[]) => Uint8Array.from(rows, (r) => r & 1); // odd rows are the secure versions
    const fit = fitLogistic(standardized(trainRows), label(trainRows), hidden, { l2 });
    if (!fit.converged) unconverged++;
    const scores = decisionValues(fit, standardized(testRows), hidden);
    const labels = label(testRows);
    acc.push(accuracy(scores, labels));
    aucs.push(rocAuc(scores, labels));
  }
  return { accuracy: acc, auc: aucs, unconverged };
}

/** The recommended band (see BAND_RULE), ascending. */
export function recommendBand(layers: readonly LayerResult[], bandSize: number): number[] {
  const L = layers.length - 1;
  const low = Math.max(Math.ceil(L / 2), L > 0 ? 1 : 0);
  let best = low;
  for (let l = low; l <= L; l++) if (layers[l].auc >= layers[best].auc) best = l;
  const floor = layers[best].auc - Math.max(0.01, layers[best].aucStd);
  let lo = best;
  let hi = best;
  while (hi - lo + 1 < bandSize) {
    const below = lo - 1 >= low ? layers[lo - 1].auc : -Infinity;
    const above = hi + 1 <= L ? layers[hi + 1].auc : -Infinity;
    if (Math.max(below, above) < floor) break;
    if (above >= below) hi++;
    else lo--;
  }
  return Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);
}

export async function probeLayers(model: Model, dataset: Dataset, options?: ProbeOptions): Promise<ProbeReport> {
  const opts = parseOptions(optionsSchema, options, "probeLayers");
  const onProgress = opts.onProgress as ProbeOptions["onProgress"];
  const started = performance.now();
  const pairs = await dataset.pairs(model);
  if (opts.folds > pairs.length) {
    throw new DeepGuardError("ERR_ARGUMENT", `probeLayers option "folds": ${opts.folds} folds need at least ${opts.folds} pairs, the dataset has ${pairs.length}`);
  }
  const extracted = await extractFeatures(model, pairs, opts.pooling, onProgress, opts.signal);
  const fold = pairFolds(pairs.length, opts.folds, opts.seed);
  const L = model.config.numLayers;
  const fitStarted = performance.now();
  const layers: LayerResult[] = [];
  let unconvergedFits = 0;
  for (let l = 0; l <= L; l++) {
    throwIfAborted(opts.signal, "probeLayers");
    const r = probeLayer(extracted.features[l], extracted.hidden, fold, opts.folds, opts.l2);
    unconvergedFits += r.unconverged;
    const a = meanStd(r.accuracy);
    const u = meanStd(r.auc);
    layers.push({ layer: l, accuracy: a.mean, accuracyStd: a.std, auc: u.mean, aucStd: u.std });
    onProgress?.({ phase: "fit", done: l + 1, total: L + 1 });
    await new Promise((resolve) => setImmediate(resolve)); // let the event loop breathe between layers
  }
  const fitSeconds = (performance.now() - fitStarted) / 1000;
  const best = layers.reduce((b, r) => (r.auc > b.auc ? r : b), layers[0]);
  return {
    model: { directory: model.info.directory, architecture: model.info.architecture, numLayers: L, hiddenSize: model.config.hiddenSize },
    dataset: {
      source: dataset.source,
      pairs: pairs.length,
      functions: pairs.length * 2,
      tokens: extracted.tokens,
      cweCounts: countCwes(pairs),
    },
    options: { folds: opts.folds, seed: opts.seed, pooling: opts.pooling, l2: opts.l2, bandSize: opts.bandSize },
    layers,
    bestLayer: best.layer,
    bestAuc: best.auc,
    finalLayerDrop: best.auc - layers[L].auc,
    recommendedLayers: recommendBand(layers, opts.bandSize),
    bandRule: BAND_RULE,
    changedFallbacks: extracted.changedFallbacks,
    prefixTokens: extracted.prefix,
    unconvergedFits,
    timings: {
      forwardSeconds: extracted.forwardSeconds,
      poolSeconds: extracted.poolSeconds,
      fitSeconds,
      totalSeconds: (performance.now() - started) / 1000,
      tokensPerSecond: extracted.tokens / Math.max(extracted.forwardSeconds, 1e-9),
    },
  };
}

function countCwes(pairs: readonly SvenPair[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const p of [...pairs].sort((a, b) => (a.cwe < b.cwe ? -1 : a.cwe > b.cwe ? 1 : 0))) counts[p.cwe] = (counts[p.cwe] ?? 0) + 1;
  return counts;
}
