/**
 * LoRA training on a frozen base with DeepGuard's multi-objective loss
 * (DESIGN.md "Security modules"):
 *
 *   L = w_gen * CE(secure) + w_sec * relu(margin - (s(secure) - s(vulnerable))) + w_kl * min(KL(p_base || p_lora), 1)
 *
 *   const trainer = new Trainer(model, { lora: { rank: 16, targetModules: ["q_proj", "v_proj"] }, lr: 2e-4 });
 *   trainer.on("step", (s) => console.log(s.step, s.loss));
 *   const result = await trainer.fit(train, { val, outDir: "runs/x", evalEvery: 50, patience: 3, signal });
 *   const again = await Trainer.resume("runs/x/last", model);   // continues exactly where it stopped
 *   // custom loops: const { loss, terms } = await trainer.step(batch); await trainer.optimizerStep();
 *
 * Per pair: CE is the mean over the counted next-token targets of the secure side
 * (all, or only changed tokens: SVEN-style); KL is the mean over the secure side's
 * tokens, clamped at `klClamp` (no gradient above it); the security term needs a
 * guard (GUARD-CONTRACT.md) and runs it on the hidden states captured during the
 * secure and vulnerable LoRA passes, pushing d(loss)/d(hidden) back into them.
 * A batch's loss is the mean over its pairs; gradients are averaged over
 * `gradAccum` batches before each optimizer step.
 *
 * Checkpoints (`last/`, `best/` under outDir) hold the PEFT adapter, the guard
 * files when there is a guard, optimizer.safetensors (AdamW moments) and
 * trainer_state.json (step, epoch, position in the epoch's batch order, RNG state,
 * best validation loss). Each is written into a temp folder and renamed into
 * place, so a killed run leaves the previous checkpoint whole.
 */
import { EventEmitter } from "node:events";
import { mkdir, rename, rm, stat, copyFile, readdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { z } from "zod";
import type { Dataset, SvenPair } from "../data/dataset.js";
import { AGGREGATIONS, Guard, type Aggregation } from "../guard/guard.js";
import { probeLayers } from "../guard/probe.js";
import { DeepGuardError } from "../errors.js";
import { writeFileAtomic } from "../io/atomic.js";
import { decodeTensor, f32Bytes } from "../io/dtype.js";
import { readSafetensorsHeader, readTensorData, writeSafetensors } from "../io/safetensors.js";
import type { Model } from "../model/model.js";
import { deriveSeed, Random, shuffleInPlace } from "../random.js";
import { parseOptions, readJsonFile, signalSchema } from "../validate.js";
import type { NativeTrainPass } from "../native-types.js";
import { LoraParameters, loraSchema, trainForward, type LoraOptions } from "./lora.js";
import { AdamW, clipGradNorm } from "./optimizer.js";
import { learningRate } from "./schedule.js";

/** The part of lib/guard's Guard the trainer uses (GUARD-CONTRACT.md). */
export interface TrainableGuard {
  readonly layers: readonly number[];
  forwardTrain(
    batch: { ids: Int32Array; hidden: Float32Array[] }[],
    options: { train: boolean; seed: number },
  ): Promise<{ scores: number[]; tokens: Float32Array[]; backward(dSequence: number[]): Promise<{ dHidden: Float32Array[][] }> }>;
  parameters(): Record<string, Float32Array>;
  gradients(): Record<string, Float32Array>;
  zeroGrad(): void;
  updateTokenStats(pair: { secure: Int32Array; vulnerable: Int32Array }): void;
  save(dir: string): Promise<void>;
}

export interface LossWeights {
  generation?: number;
  security?: number;
  kl?: number;
  margin?: number;
  /** SVEN-style: only next-token targets that are changed tokens of the secure side count. */
  changedTokensOnly?: boolean;
  /** KL is clamped at this value (DESIGN.md: 1). */
  klClamp?: number;
}

export interface TrainerOptions {
  /**
   * Hidden-state indices the guard aggregates (negatives count from the end), or
   * "auto" (default): probe the training set at fit() and take the recommended band.
   * Used only when loss.security > 0 and no guard is passed.
   */
  layers?: "auto" | number[];
  /** The guard's aggregation (default "attention"). */
  aggregation?: Aggregation;
  lora?: LoraOptions;
  loss?: LossWeights;
  lr?: number;
  warmupSteps?: number;
  decay?: "linear" | "cosine" | "constant";
  minLrRatio?: number;
  weightDecay?: number;
  epochs?: number;
  /** Stop after this many optimizer steps, or at the end of `epochs`, whichever comes first (default: epochs worth). */
  maxSteps?: number;
  batchSize?: number;
  gradAccum?: number;
  /** Global gradient-norm clip (default 1; Infinity: none). */
  maxGradNorm?: number;
  seed?: number;
  /** Activation checkpointing: keep only layer inputs, recompute each layer in backward. */
  recompute?: boolean;
  /** Length bucketing: batches are cut from groups of batchSize * bucketBatches pairs sorted by length (1: off). */
  bucketBatches?: number;
}

const lossSchema = z
  .object({
    generation: z.number().min(0).finite().default(1),
    security: z.number().min(0).finite().default(0.5),
    kl: z.number().min(0).finite().default(1),
    margin: z.number().finite().default(0.5),
    changedTokensOnly: z.boolean().default(false),
    klClamp: z.number().positive().default(1),
  })
  .strict();

const trainerSchema = z
  .object({
    layers: z.union([z.literal("auto"), z.array(z.number().int()).min(1)]).default("auto"),
    aggregation: z.enum(AGGREGATIONS).default("attention"),
    lora: loraSchema.default({ rank: 16, dropout: 0, targetModules: ["q_proj", "v_proj"], rslora: false }),
    loss: lossSchema.default({ generation: 1, security: 0.5, kl: 1, margin: 0.5, changedTokensOnly: false, klClamp: 1 }),
    lr: z.number().positive().finite().default(2e-4),
    warmupSteps: z.number().int().nonnegative().default(0),
    decay: z.enum(["linear", "cosine", "constant"]).default("cosine"),
    minLrRatio: z.number().min(0).max(1).default(0),
    weightDecay: z.number().min(0).finite().default(0),
    epochs: z.number().int().positive().default(1),
    maxSteps: z.number().int().positive().optional(),
    batchSize: z.number().int().positive().default(4),
    gradAccum: z.number().int().positive().default(1),
    maxGradNorm: z.number().positive().default(1),
    seed: z.number().int().nonnegative().refine(Number.isSafeInteger).default(0),
    recompute: z.boolean().default(false),
    bucketBatches: z.number().int().positive().default(8),
  })
  .strict();
type Resolved = z.output<typeof trainerSchema>;

export interface FitOptions {
  val?: Dataset;
  /** Where checkpoints (last/, best/) and the final adapter (top level) go. */
  outDir: string;
  /** Validate (and checkpoint) every N optimizer steps (default: once per epoch). */
  evalEvery?: number;
  /** Stop after this many evaluations without improvement (default: never). */
  patience?: number;
  /** Write `last/` every N optimizer steps as well (default: at each evaluation and at the end). */
  saveEvery?: number;
  signal?: AbortSignal;
}

const fitSchema = z
  .object({
    val: z.custom<Dataset>((v) => typeof v === "object" && v !== null && "pairs" in v, "must be a Dataset").optional(),
    outDir: z.string().min(1),
    evalEvery: z.number().int().positive().optional(),
    patience: z.number().int().positive().optional(),
    saveEvery: z.number().int().positive().optional(),
    signal: signalSchema,
  })
  .strict();

export interface StepTerms {
  generation: number;
  security: number;
  kl: number;
}

export interface StepResult {
  /** Mean total loss over the batch's pairs. */
  loss: number;
  terms: StepTerms;
  /** Tokens run through the model (secure + vulnerable sides). */
  tokens: number;
}

export interface StepEvent extends StepTerms {
  step: number;
  epoch: number;
  loss: number;
  lr: number;
  gradNorm: number;
  tokensPerSec: number;
  /** Seconds left at the current pace. */
  eta: number;
  totalSteps: number;
}

export interface EvalEvent extends StepTerms {
  step: number;
  loss: number;
  best: boolean;
}

export interface FitResult {
  steps: number;
  stopped: "completed" | "early-stopping" | "aborted";
  bestValLoss: number | null;
  /** Where the final adapter was written (outDir). */
  outDir: string;
  history: { step: number; loss: number }[];
}

interface TrainerState {
  version: 1;
  options: Resolved;
  baseModel: { architecture: string; hiddenSize: number; numLayers: number; vocabSize: number };
  step: number;
  epoch: number;
  /** Index of the next batch within the epoch's batch order. */
  batchInEpoch: number;
  rng: [number, number, number, number];
  bestValLoss: number | null;
  badEvals: number;
  history: { step: number; loss: number }[];
}

const STATE_FILE = "trainer_state.json";
const OPTIMIZER_FILE = "optimizer.safetensors";

export class Trainer extends EventEmitter {
  readonly model: Model;
  readonly options: Readonly<Resolved>;
  readonly lora: LoraParameters;
  #guard: TrainableGuard | null;
  #optimizer: AdamW;
  #rng: Random;
  #step = 0;
  #epoch = 0;
  #batchInEpoch = 0;
  #bestValLoss: number | null = null;
  #badEvals = 0;
  #history: { step: number; loss: number }[] = [];
  #totalSteps = 1;

  constructor(model: Model, options?: TrainerOptions, extra?: { guard?: TrainableGuard; lora?: LoraParameters }) {
    super();
    this.model = model;
    this.options = parseOptions(trainerSchema, options, "Trainer");
    this.#guard = extra?.guard ?? null;
    const o = this.options;
    if (o.loss.security > 0 && !this.#guard && o.layers !== "auto") {
      this.#guard = Guard.create(model, { layers: o.layers, aggregation: o.aggregation, seed: deriveSeed(o.seed, 3) });
    }
    this.lora = extra?.lora ?? LoraParameters.create(model, o.lora, deriveSeed(o.seed, 1));
    this.#optimizer = this.#makeOptimizer();
    this.#rng = new Random(deriveSeed(o.seed, 2));
  }

  /** The guard trained with the security term (null without one, or before fit() probes "auto" layers). */
  get guard(): TrainableGuard | null {
    return this.#guard;
  }

  #makeOptimizer(): AdamW {
    const params: Record<string, Float32Array> = { ...this.lora.parameters(), ...(this.#guard?.parameters() ?? {}) };
    return new AdamW(params, {
      weightDecay: this.options.weightDecay,
      noDecay: (name) => name.endsWith(".bias") || /\.ln\d\./.test(name) || name === "token_stats",
    });
  }

  /** With layers "auto" and a security term: probe `data` and create the guard on the recommended band. */
  async #ensureGuard(data: Dataset, signal?: AbortSignal): Promise<void> {
    const o = this.options;
    if (o.loss.security === 0 || this.#guard) return;
    const report = await probeLayers(this.model, data, { seed: o.seed, ...(signal ? { signal } : {}) });
    this.#guard = Guard.create(this.model, { layers: report.recommendedLayers, aggregation: o.aggregation, seed: deriveSeed(o.seed, 3) });
    this.#optimizer = this.#makeOptimizer();
    this.emit("probe", report);
  }

  /** Optimizer steps taken so far. */
  get stepCount(): number {
    return this.#step;
  }

  /** The learning rate of the next optimizer step. */
  get lr(): number {
    const o = this.options;
    return learningRate(this.#step, { lr: o.lr, warmupSteps: o.warmupSteps, totalSteps: Math.max(1, this.#totalSteps), decay: o.decay, minLrRatio: o.minLrRatio });
  }

  /**
   * Forward and backward over one batch of pairs, accumulating gradients scaled
   * for a mean over the batch and over gradAccum batches. No parameter changes
   * until optimizerStep().
   */
  async step(batch: readonly SvenPair[]): Promise<StepResult> {
    return this.#run(batch, true);
  }

  /** Clips, applies one AdamW update at the scheduled learning rate, clears gradients. */
  async optimizerStep(): Promise<{ lr: number; gradNorm: number }> {
    const grads: Record<string, Float32Array> = { ...this.lora.gradients(), ...(this.#guard?.gradients() ?? {}) };
    const gradNorm = await clipGradNorm(Object.values(grads), this.options.maxGradNorm);
    const lr = this.lr;
    await this.#optimizer.step(grads, lr);
    this.lora.zeroGrad();
    this.#guard?.zeroGrad();
    this.#step++;
    return { lr, gradNorm };
  }

  /** Mean loss and terms over a dataset without updating anything (no dropout). */
  async evaluate(data: Dataset): Promise<StepResult> {
    const pairs = await data.pairs(this.model);
    if (pairs.length === 0) throw new DeepGuardError("ERR_DATASET_EMPTY", "the validation set holds no usable pairs");
    const sum = { loss: 0, generation: 0, security: 0, kl: 0, tokens: 0 };
    const bs = this.options.batchSize;
    for (let i = 0; i < pairs.length; i += bs) {
      const batch = pairs.slice(i, i + bs);
      const r = await this.#run(batch, false);
      sum.loss += r.loss * batch.length;
      sum.generation += r.terms.generation * batch.length;
      sum.security += r.terms.security * batch.length;
      sum.kl += r.terms.kl * batch.length;
      sum.tokens += r.tokens;
    }
    const n = pairs.length;
    return { loss: sum.loss / n, terms: { generation: sum.generation / n, security: sum.security / n, kl: sum.kl / n }, tokens: sum.tokens };
  }

  async #run(batch: readonly SvenPair[], train: boolean): Promise<StepResult> {
    if (!Array.isArray(batch) || batch.length === 0) throw new DeepGuardError("ERR_ARGUMENT", "Trainer.step needs a non-empty batch of pairs");
    if (this.options.loss.security > 0 && !this.#guard) {
      throw new DeepGuardError("ERR_ARGUMENT", 'Trainer: layers "auto" are probed by fit(); for custom loops pass explicit layers or a guard');
    }
    const o = this.options;
    const w = o.loss;
    const scale = 1 / (batch.length * (train ? o.gradAccum : 1));
    const useSec = w.security > 0 && this.#guard !== null;
    const guardLayers = useSec ? [...this.#guard!.layers] : [];
    const capture = [...new Set(guardLayers)].sort((a, b) => a - b);
    const sum = { loss: 0, generation: 0, security: 0, kl: 0, tokens: 0 };
    for (const pair of batch) {
      const ids = pair.secure.ids;
      const T = ids.length;
      if (T < 2) throw new DeepGuardError("ERR_ARGUMENT", `pair ${pair.id}: the secure side needs at least 2 tokens`);
      const targets = new Int32Array(T).fill(-1);
      const ceWeights = new Float32Array(T);
      let counted = 0;
      for (let t = 0; t + 1 < T; t++) {
        targets[t] = ids[t + 1];
        if (!w.changedTokensOnly || pair.secure.changed[t + 1]) {
          ceWeights[t] = 1;
          counted++;
        }
      }
      const seed = train ? this.#rng.nextUint32() : 0;
      const wantCe = w.generation > 0 && counted > 0;
      const secure = await trainForward(this.model, ids, this.lora, {
        seed, train, capture, recompute: o.recompute,
        ...(wantCe ? { targets, ceWeights } : {}),
        ...(w.kl > 0 ? { klWeights: new Float32Array(T).fill(1) } : {}),
      });
      let vulnerable: NativeTrainPass | null = null;
      try {
        const ce = wantCe ? secure.ce / counted : 0;
        const kl = w.kl > 0 ? secure.kl / T : 0;
        let sec = 0;
        let dSecure: (Float32Array | null)[] | undefined;
        let dVulnerable: (Float32Array | null)[] | undefined;
        if (useSec) {
          vulnerable = await trainForward(this.model, pair.vulnerable.ids, this.lora, { seed: (seed ^ 0x5bd1e995) >>> 0, train, capture, recompute: o.recompute });
          const pick = (pass: NativeTrainPass) => guardLayers.map((l) => pass.hidden[capture.indexOf(l)]);
          const g = await this.#guard!.forwardTrain(
            [{ ids, hidden: pick(secure) }, { ids: pair.vulnerable.ids, hidden: pick(vulnerable) }],
            { train, seed },
          );
          const gap = w.margin - (g.scores[0] - g.scores[1]);
          sec = Math.max(0, gap);
          if (train) {
            const c = gap > 0 ? w.security * scale : 0;
            const { dHidden } = await g.backward([-c, c]);
            const toCapture = (d: Float32Array[]) => capture.map((l) => {
              const acc = new Float32Array(T === 0 ? 0 : d[0].length);
              guardLayers.forEach((gl, i) => { if (gl === l) for (let k = 0; k < acc.length; k++) acc[k] += d[i][k]; });
              return acc;
            });
            dSecure = toCapture(dHidden[0]);
            dVulnerable = toCapture(dHidden[1]);
            this.#guard!.updateTokenStats({ secure: ids, vulnerable: pair.vulnerable.ids });
          }
        }
        if (train) {
          const klCoef = w.kl > 0 && kl < w.klClamp ? (w.kl * scale) / T : 0;
          const ceCoef = wantCe ? (w.generation * scale) / counted : 0;
          await secure.backward({ ceCoef, klCoef, ...(dSecure ? { dHidden: dSecure } : {}) });
          if (vulnerable) await vulnerable.backward({ ceCoef: 0, klCoef: 0, ...(dVulnerable ? { dHidden: dVulnerable } : {}) });
        }
        const klTerm = Math.min(kl, w.klClamp);
        sum.generation += ce;
        sum.kl += klTerm;
        sum.security += sec;
        sum.loss += w.generation * ce + w.security * sec + w.kl * klTerm;
        sum.tokens += T + (vulnerable ? pair.vulnerable.ids.length : 0);
      } finally {
        secure.dispose();
        vulnerable?.dispose();
      }
    }
    const n = batch.length;
    return { loss: sum.loss / n, terms: { generation: sum.generation / n, security: sum.security / n, kl: sum.kl / n }, tokens: sum.tokens };
  }

  /** The epoch's batches: seeded shuffle, then length buckets (sorted groups of bucketBatches batches), batch order shuffled. */
  async #batches(data: Dataset, epoch: number): Promise<SvenPair[][]> {
    const pairs = [...(await data.pairs(this.model))];
    const o = this.options;
    const rng = new Random(deriveSeed(o.seed, 1000 + epoch));
    shuffleInPlace(pairs, rng);
    const group = o.batchSize * o.bucketBatches;
    const batches: SvenPair[][] = [];
    for (let g = 0; g < pairs.length; g += group) {
      const chunk = pairs.slice(g, g + group).sort((a, b) => a.secure.ids.length - b.secure.ids.length);
      for (let i = 0; i < chunk.length; i += o.batchSize) batches.push(chunk.slice(i, i + o.batchSize));
    }
    return shuffleInPlace(batches, rng);
  }

  /**
   * Trains for `epochs` (or `maxSteps`), validating every `evalEvery` steps, keeping
   * best/ and last/ checkpoints, stopping early after `patience` evaluations without
   * improvement or at the next step once `signal` aborts (after writing last/).
   * The final adapter (best/ when validated, else last/) is copied to outDir.
   */
  async fit(train: Dataset, options: FitOptions): Promise<FitResult> {
    const f = parseOptions(fitSchema, options, "Trainer.fit");
    const o = this.options;
    const outDir = resolve(f.outDir);
    await mkdir(outDir, { recursive: true }).catch((err) => {
      throw new DeepGuardError("ERR_FILE_WRITE", `cannot create ${outDir}: ${(err as Error).message}`, { cause: err });
    });
    const pairs = await train.pairs(this.model);
    if (pairs.length === 0) throw new DeepGuardError("ERR_DATASET_EMPTY", `${train.source}: the training set holds no usable pairs`);
    await this.#ensureGuard(train, f.signal);
    const perEpoch = Math.ceil(Math.ceil(pairs.length / o.batchSize) / o.gradAccum);
    this.#totalSteps = o.maxSteps ?? perEpoch * o.epochs;
    const evalEvery = f.evalEvery ?? perEpoch;
    let stopped: FitResult["stopped"] = "completed";
    let windowStart = performance.now(), windowTokens = 0;
    const started = performance.now(), startStep = this.#step;

    outer: while (this.#epoch < o.epochs && this.#step < this.#totalSteps) {
      const batches = await this.#batches(train, this.#epoch);
      while (this.#batchInEpoch < batches.length) {
        if (f.signal?.aborted) {
          stopped = "aborted";
          break outer;
        }
        const acc = { loss: 0, generation: 0, security: 0, kl: 0 };
        let micro = 0;
        while (micro < o.gradAccum && this.#batchInEpoch < batches.length) {
          const r = await this.step(batches[this.#batchInEpoch++]);
          acc.loss += r.loss; acc.generation += r.terms.generation; acc.security += r.terms.security; acc.kl += r.terms.kl;
          windowTokens += r.tokens;
          micro++;
        }
        if (micro < o.gradAccum) {  // a short last group: rescale to a mean over the batches it had
          const fix = o.gradAccum / micro;
          for (const g of Object.values(this.lora.gradients())) for (let i = 0; i < g.length; i++) g[i] *= fix;
          if (this.#guard) for (const g of Object.values(this.#guard.gradients())) for (let i = 0; i < g.length; i++) g[i] *= fix;
        }
        const { lr, gradNorm } = await this.optimizerStep();
        const now = performance.now();
        const loss = acc.loss / micro;
        this.#history.push({ step: this.#step, loss });
        const pace = (now - started) / 1000 / Math.max(1, this.#step - startStep);
        const ev: StepEvent = {
          step: this.#step, epoch: this.#epoch, loss,
          generation: acc.generation / micro, security: acc.security / micro, kl: acc.kl / micro,
          lr, gradNorm, tokensPerSec: windowTokens / Math.max(1e-9, (now - windowStart) / 1000),
          eta: pace * Math.max(0, this.#totalSteps - this.#step), totalSteps: this.#totalSteps,
        };
        windowStart = now;
        windowTokens = 0;
        this.emit("step", ev);
        const epochDone = this.#batchInEpoch >= batches.length;
        if (epochDone) {
          this.#epoch++;
          this.#batchInEpoch = 0;
        }
        const atEnd = this.#step >= this.#totalSteps || this.#epoch >= o.epochs;
        if (f.val && (this.#step % evalEvery === 0 || atEnd)) {
          const r = await this.evaluate(f.val);
          const best = this.#bestValLoss === null || r.loss < this.#bestValLoss;
          if (best) {
            this.#bestValLoss = r.loss;
            this.#badEvals = 0;
          } else this.#badEvals++;
          this.emit("eval", { step: this.#step, loss: r.loss, ...r.terms, best } satisfies EvalEvent);
          if (best) await this.save(join(outDir, "best"));
          await this.save(join(outDir, "last"));
          if (f.patience !== undefined && this.#badEvals >= f.patience) {
            stopped = "early-stopping";
            break outer;
          }
        } else if (f.saveEvery && this.#step % f.saveEvery === 0) {
          await this.save(join(outDir, "last"));
        }
        if (atEnd) break outer;
        if (epochDone) break;  // the next epoch has its own batch order
      }
    }
    await this.save(join(outDir, "last"));
    const final = f.val && this.#bestValLoss !== null && (await exists(join(outDir, "best", STATE_FILE))) ? "best" : "last";
    await publish(join(outDir, final), outDir);
    return { steps: this.#step, stopped, bestValLoss: this.#bestValLoss, outDir, history: [...this.#history] };
  }

  /** Writes a resumable checkpoint folder atomically (temp folder, then rename over `dir`). */
  async save(dir: string): Promise<void> {
    const target = resolve(dir);
    const tmp = `${target}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
    try {
      await mkdir(tmp, { recursive: true });
      await this.lora.save(tmp);
      if (this.#guard) await this.#guard.save(tmp);
      const st = this.#optimizer.state();
      const tensors: Record<string, { dtype: string; shape: number[]; data: Uint8Array }> = {};
      for (const [name, m] of Object.entries(st.m)) {
        tensors[`m.${name}`] = { dtype: "F32", shape: [m.length], data: f32Bytes(m) };
        tensors[`v.${name}`] = { dtype: "F32", shape: [m.length], data: f32Bytes(st.v[name]) };
      }
      await writeSafetensors(join(tmp, OPTIMIZER_FILE), tensors, { step: String(st.step) });
      const c = this.model.config;
      const state: TrainerState = {
        version: 1, options: this.options as Resolved,
        baseModel: { architecture: c.architecture, hiddenSize: c.hiddenSize, numLayers: c.numLayers, vocabSize: c.vocabSize },
        step: this.#step, epoch: this.#epoch, batchInEpoch: this.#batchInEpoch, rng: this.#rng.state(),
        bestValLoss: this.#bestValLoss, badEvals: this.#badEvals, history: this.#history,
      };
      // Written last: a folder without it is never taken for a checkpoint.
      await writeFileAtomic(join(tmp, STATE_FILE), JSON.stringify(state, null, 1));
      const old = `${target}.old`;
      await rm(old, { recursive: true, force: true });
      if (await exists(target)) await rename(target, old);
      await rename(tmp, target);
      await rm(old, { recursive: true, force: true });
    } catch (err) {
      await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
      if (err instanceof DeepGuardError) throw err;
      throw new DeepGuardError("ERR_FILE_WRITE", `cannot write the checkpoint ${target}: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * A trainer restored from a checkpoint folder written by save()/fit() for `model`:
   * same options, factors, optimizer moments, RNG and position in the data.
   * (A folder interrupted mid-replace is found at `<dir>.old`.)
   */
  static async resume(
    directory: string,
    model: Model,
    extra?: { guard?: TrainableGuard; /** Extend the run: a new step or epoch budget. */ maxSteps?: number; epochs?: number },
  ): Promise<Trainer> {
    let dir = resolve(directory);
    if (!(await exists(join(dir, STATE_FILE))) && (await exists(join(`${dir}.old`, STATE_FILE)))) dir = `${dir}.old`;
    const where = join(dir, STATE_FILE);
    const raw = await readJsonFile(where, "ERR_TRAIN_CHECKPOINT", true);
    if (raw === undefined) throw new DeepGuardError("ERR_TRAIN_CHECKPOINT", `${dir} is not a training checkpoint (no ${STATE_FILE})`);
    const parsed = stateSchema.safeParse(raw);
    if (!parsed.success) {
      const i = parsed.error.issues[0];
      throw new DeepGuardError("ERR_TRAIN_CHECKPOINT", `${where}: field "${i.path.join(".")}": ${i.message}`);
    }
    const s = parsed.data;
    const c = model.config;
    if (s.baseModel.hiddenSize !== c.hiddenSize || s.baseModel.numLayers !== c.numLayers || s.baseModel.vocabSize !== c.vocabSize || s.baseModel.architecture !== c.architecture) {
      throw new DeepGuardError("ERR_TRAIN_CHECKPOINT", `${where}: the checkpoint was trained on another model (${JSON.stringify(s.baseModel)})`);
    }
    let lora: LoraParameters;
    try {
      lora = await LoraParameters.load(dir, model);
    } catch (err) {
      throw new DeepGuardError("ERR_TRAIN_CHECKPOINT", `${dir}: ${(err as Error).message}`, { cause: err });
    }
    let guard: TrainableGuard | undefined = extra?.guard;
    if (!guard && (await exists(join(dir, "guard.json")))) {
      try {
        guard = await Guard.load(dir, model);
      } catch (err) {
        throw new DeepGuardError("ERR_TRAIN_CHECKPOINT", `${dir}: ${(err as Error).message}`, { cause: err });
      }
    }
    const options = {
      ...(s.options as TrainerOptions),
      ...(extra?.maxSteps !== undefined ? { maxSteps: extra.maxSteps } : {}),
      ...(extra?.epochs !== undefined ? { epochs: extra.epochs } : {}),
    };
    const trainer = new Trainer(model, options, { lora, ...(guard ? { guard } : {}) });
    const optPath = join(dir, OPTIMIZER_FILE);
    try {
      const header = await readSafetensorsHeader(optPath);
      const params = { ...lora.parameters(), ...(guard?.parameters() ?? {}) };
      const m: Record<string, Float32Array> = {}, v: Record<string, Float32Array> = {};
      for (const name of Object.keys(params)) {
        for (const [k, dst] of [["m", m], ["v", v]] as const) {
          const t = header.tensors.get(`${k}.${name}`);
          if (!t || t.dtype !== "F32") throw new Error(`tensor "${k}.${name}" is missing or not F32`);
          dst[name] = Float32Array.from(decodeTensor(await readTensorData(header, `${k}.${name}`), "F32"));
        }
      }
      const step = Number(header.metadata?.step);
      if (!Number.isInteger(step) || step !== s.step) throw new Error(`metadata "step" (${header.metadata?.step}) does not match ${STATE_FILE} (${s.step})`);
      trainer.#optimizer.loadState({ step, m, v });
    } catch (err) {
      throw new DeepGuardError("ERR_TRAIN_CHECKPOINT", `${optPath}: ${(err as Error).message}`, { cause: err });
    }
    trainer.#step = s.step;
    trainer.#epoch = s.epoch;
    trainer.#batchInEpoch = s.batchInEpoch;
    try {
      trainer.#rng = Random.fromState(s.rng);
    } catch (err) {
      throw new DeepGuardError("ERR_TRAIN_CHECKPOINT", `${where}: field "rng": ${(err as Error).message}`, { cause: err });
    }
    trainer.#bestValLoss = s.bestValLoss;
    trainer.#badEvals = s.badEvals;
    trainer.#history = s.history;
    return trainer;
  }
}

const stateSchema = z.object({
  version: z.literal(1),
  options: z.record(z.string(), z.unknown()),
  baseModel: z.object({ architecture: z.string(), hiddenSize: z.number(), numLayers: z.number(), vocabSize: z.number() }),
  step: z.number().int().nonnegative(),
  epoch: z.number().int().nonnegative(),
  batchInEpoch: z.number().int().nonnegative(),
  rng: z.tuple([z.number(), z.number(), z.number(), z.number()]),
  bestValLoss: z.number().nullable(),
  badEvals: z.number().int().nonnegative(),
  history: z.array(z.object({ step: z.number(), loss: z.number() })),
});

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

/** Copies a checkpoint's adapter (and guard) files to the top of outDir, each atomically. */
async function publish(from: string, outDir: string): Promise<void> {
  for (const name of await readdir(from)) {
    if (name === STATE_FILE || name === OPTIMIZER_FILE) continue;
    const tmp = join(outDir, `${name}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
    try {
      await copyFile(join(from, name), tmp);
      await rename(tmp, join(outDir, name));
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => undefined);
      throw new DeepGuardError("ERR_FILE_WRITE", `cannot write ${join(outDir, name)}: ${(err as Error).message}`, { cause: err });
    }
  }
}
