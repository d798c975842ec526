/**
 * Full-parameter pretraining (issue 9): a Qwen2/Llama model trained from random
 * weights on a packed corpus (lib/corpus/pack.ts) with the next-token LM loss.
 *
 * The trainable model lives in native code (native/train/full_model.h): F32
 * master weights it owns (optionally with BF16 compute copies), which the
 * per-layer forward/backward read directly. Its weights and gradients come to
 * JavaScript as zero-copy Float32Array views, so the shared AdamW
 * (lib/train/optimizer.ts), gradient clipping and the checkpoint writer work on
 * them in place; nothing is copied per step.
 *
 * Config file (see README "Pretraining"): a Hugging Face config.json
 * (architectures, hidden_size, num_hidden_layers, num_attention_heads,
 * num_key_value_heads, intermediate_size, vocab_size, rope_theta,
 * tie_word_embeddings, max_position_embeddings, ...) plus a "training" object
 * validated by `trainingSchema` below.
 *
 * Output directory:
 *   config.json, model.safetensors, generation_config.json (+ tokenizer files):
 *     a Hugging Face checkpoint that Model.load and transformers load;
 *   checkpoint/: model.safetensors (F32 masters), optimizer.safetensors (AdamW
 *     moments), state.json (step, loss history): what --resume continues from.
 * Both are rewritten every `saveEvery` steps and at the end, atomically.
 */
import { copyFile, mkdir, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { DeepGuardError } from "../errors.js";
import { syncDirectory, writeJsonAtomic } from "../io/atomic.js";
import { readSafetensorsHeader, readTensorData, writeSafetensors, type TensorToWrite } from "../io/safetensors.js";
import { f32ToBf16Bytes } from "../io/dtype.js";
import { exists } from "../model/checkpoint.js";
import { parseModelConfig, toNativeConfig, type ModelConfig } from "../model/config.js";
import { native } from "../native.js";
import type { NativeFullModel } from "../native-types.js";
import { Random, deriveSeed, shuffleInPlace } from "../random.js";
import { parseOptions } from "../validate.js";
import { readPacked } from "../corpus/pack.js";
import { AdamW, clipGradNorm } from "./optimizer.js";
import { learningRate } from "./schedule.js";

/** The "training" section of a pretraining config. */
export const trainingSchema = z
  .object({
    /** Peak learning rate (after warmup). */
    lr: z.number().positive().max(1),
    /** Cosine decay floor as a fraction of lr. */
    minLrRatio: z.number().min(0).max(1).default(0.1),
    warmupSteps: z.number().int().nonnegative().default(0),
    /** Sequences (packed rows) per optimizer step. */
    batchSize: z.number().int().positive(),
    /** Tokens per sequence: must equal the packed corpus's seq_len. */
    seqLen: z.number().int().min(1),
    /** Total optimizer steps: the cosine schedule's length. */
    steps: z.number().int().positive(),
    seed: z.number().int().nonnegative().default(0),
    weightDecay: z.number().min(0).default(0.1),
    beta1: z.number().min(0).lt(1).default(0.9),
    beta2: z.number().min(0).lt(1).default(0.95),
    eps: z.number().positive().default(1e-8),
    /** Global gradient-norm clip (0: none). */
    clip: z.number().min(0).default(1.0),
    /** Std of the normal init of matrices; o_proj/down_proj are scaled by 1/sqrt(2 layers). */
    initStd: z.number().positive().default(0.02),
    /** Held-out evaluation every N steps (0: only at the end); on the first evalRows rows. */
    evalEvery: z.number().int().nonnegative().default(200),
    evalRows: z.number().int().positive().default(64),
    /** Checkpoint every N steps (0: only at the end / on abort). */
    saveEvery: z.number().int().nonnegative().default(200),
    /** Forward/backward weight copies: float32 (the masters) or bfloat16 (refreshed each step). */
    computeDtype: z.enum(["float32", "bfloat16"]).default("float32"),
    /** dtype of the exported model.safetensors. */
    outputDtype: z.enum(["bfloat16", "float32"]).default("bfloat16"),
  })
  .strict();
export type TrainingConfig = z.output<typeof trainingSchema>;

export interface PretrainConfig {
  /** The Hugging Face part (everything but "training"), written out as config.json. */
  hf: Record<string, unknown>;
  model: ModelConfig;
  training: TrainingConfig;
}

/** Validates a pretraining config object; `where` names it in errors. */
export function parsePretrainConfig(json: unknown, where = "config.json"): PretrainConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new DeepGuardError("ERR_CONFIG", `${where}: must be a JSON object`);
  const { training, ...hf } = json as Record<string, unknown>;
  if (training === undefined) throw new DeepGuardError("ERR_CONFIG", `${where}: a "training" object is required (lr, batchSize, seqLen, steps, ...)`);
  const model = parseModelConfig(hf, where);
  const parsed = trainingSchema.safeParse(training);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw new DeepGuardError("ERR_CONFIG", `${where}: field "training.${i.path.join(".")}": ${i.message}`);
  }
  if (parsed.data.seqLen > model.maxPositionEmbeddings) {
    throw new DeepGuardError("ERR_CONFIG", `${where}: training.seqLen ${parsed.data.seqLen} exceeds max_position_embeddings ${model.maxPositionEmbeddings}`);
  }
  return { hf, model, training: parsed.data };
}

export async function readPretrainConfig(path: string): Promise<PretrainConfig> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw new DeepGuardError("ERR_FILE_OPEN", `cannot read ${path}: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new DeepGuardError("ERR_CONFIG", `${path}: invalid JSON: ${(e as Error).message}`);
  }
  return parsePretrainConfig(json, path);
}

/** Parameters excluded from weight decay: biases and norm gains. */
export function isNoDecay(name: string): boolean {
  return name.endsWith(".bias") || name.endsWith("norm.weight");
}

/** Training FLOPs per token (forward + backward = 3 x forward): 6 N_matmul + 12 L T d_attn (causal: half of 2 T). */
export function trainFlopsPerToken(c: ModelConfig, seqLen: number): number {
  const d = c.hiddenSize, qo = c.numHeads * c.headDim, kvo = c.numKvHeads * c.headDim;
  const perLayer = d * qo * 2 + d * kvo * 2 + 3 * d * c.intermediateSize;
  const matmul = c.numLayers * perLayer + c.vocabSize * d; // LM head (the embedding lookup is free)
  const attention = c.numLayers * 2 * seqLen * qo; // QK^T and PV, causal: T/2 keys on average, 2 flops each
  return 6 * matmul + 3 * attention;
}

/** A trainable model: named F32 weights and their gradients, shared with native code. */
export class PretrainModel {
  readonly config: ModelConfig;
  readonly params = new Map<string, Float32Array>();
  readonly grads = new Map<string, Float32Array>();
  readonly shapes = new Map<string, number[]>();
  readonly #native: NativeFullModel;

  constructor(config: ModelConfig, options: { computeDtype?: "float32" | "bfloat16" } = {}) {
    this.config = config;
    this.#native = native().fullModelCreate(toNativeConfig(config), { bf16Compute: options.computeDtype === "bfloat16" });
    for (const p of this.#native.params) {
      this.params.set(p.name, p.data);
      this.grads.set(p.name, p.grad);
      this.shapes.set(p.name, p.shape);
    }
  }

  get parameterCount(): number {
    let n = 0;
    for (const p of this.params.values()) n += p.length;
    return n;
  }

  /** Normal(0, std) matrices (o_proj/down_proj: std / sqrt(2 layers)), unit norms, zero biases. */
  initialize(seed: number, std: number): void {
    const random = new Random(deriveSeed(seed, 0x1417));
    const residual = std / Math.sqrt(2 * this.config.numLayers);
    for (const [name, p] of this.params) {
      if (this.shapes.get(name)!.length === 1) {
        p.fill(name.endsWith(".bias") ? 0 : 1);
        continue;
      }
      const s = name.endsWith("o_proj.weight") || name.endsWith("down_proj.weight") ? residual : std;
      for (let i = 0; i < p.length; i += 2) {
        const u1 = 1 - random.nextDouble(), u2 = random.nextDouble();
        const r = Math.sqrt(-2 * Math.log(u1)) * s;
        p[i] = r * Math.cos(2 * Math.PI * u2);
        if (i + 1 < p.length) p[i + 1] = r * Math.sin(2 * Math.PI * u2);
      }
    }
  }

  /**
   * Forward (+ backward with train) over packed rows [B][width]: inputs row[0..width-1),
   * targets row[1..width). With train the gradients become those of the mean CE.
   */
  async step(rows: Int32Array, width: number, train: boolean): Promise<{ loss: number; lossSum: number; targets: number }> {
    const r = await native().fullModelStep(this.#native.handle, rows, width, train);
    return { loss: r.lossSum / r.targets, ...r };
  }

  /** Logits [T * vocab] of one sequence from position 0. */
  async logits(ids: Int32Array): Promise<Float32Array> {
    return native().fullModelLogits(this.#native.handle, ids);
  }

  /** Safetensors tensors of the weights: F32 masters, or BF16 (the export). */
  tensors(dtype: "float32" | "bfloat16"): Record<string, TensorToWrite> {
    const out: Record<string, TensorToWrite> = {};
    for (const [name, p] of this.params) {
      const data = dtype === "bfloat16" ? f32ToBf16Bytes(p) : new Uint8Array(p.buffer, p.byteOffset, p.byteLength);
      out[name] = { dtype: dtype === "bfloat16" ? "BF16" : "F32", shape: this.shapes.get(name)!, data };
    }
    return out;
  }

  /** Loads F32 weights saved by tensors("float32") (every parameter, exact shapes). */
  async loadF32(path: string, prefix = ""): Promise<void> {
    await readF32Into(path, this.params, this.shapes, prefix);
  }
}

async function readF32Into(path: string, into: ReadonlyMap<string, Float32Array>, shapes: ReadonlyMap<string, number[]>, prefix: string): Promise<void> {
  const header = await readSafetensorsHeader(path);
  for (const [name, p] of into) {
    const info = header.tensors.get(prefix + name);
    const shape = shapes.get(name)!;
    if (!info || info.dtype !== "F32" || info.shape.join(",") !== shape.join(",")) {
      throw new DeepGuardError("ERR_TRAIN_CHECKPOINT", `${path}: tensor "${prefix + name}" must be F32 [${shape.join(", ")}]`);
    }
    const bytes = await readTensorData(header, prefix + name);
    new Uint8Array(p.buffer, p.byteOffset, p.byteLength).set(bytes);
  }
}

export interface PretrainStepEvent {
  type: "step";
  step: number; // 1-based count of optimizer steps done
  totalSteps: number;
  loss: number;
  lr: number;
  gradNorm: number;
  tokensPerSec: number;
  elapsedSec: number;
}
export interface PretrainEvalEvent {
  type: "eval";
  step: number;
  heldoutLoss: number;
  perplexity: number;
}

export interface PretrainOptions {
  config: PretrainConfig;
  /** Packed training rows (deepguard corpus pack). */
  data: string;
  /** Packed held-out rows; without it no held-out loss is reported. */
  heldout?: string;
  out: string;
  /** Continue from out/checkpoint. */
  resume?: boolean;
  /** Run at most this many optimizer steps in this call (the schedule still spans training.steps). */
  maxSteps?: number;
  /** Tokenizer folder whose files are copied into the output model. */
  tokenizer?: string;
  signal?: AbortSignal;
  onStep?: (e: PretrainStepEvent) => void;
  onEval?: (e: PretrainEvalEvent) => void;
}

const optionsSchema = z
  .object({
    config: z.custom<PretrainConfig>((v) => typeof v === "object" && v !== null && "training" in v, "must come from parsePretrainConfig"),
    data: z.string().min(1),
    heldout: z.string().min(1).optional(),
    out: z.string().min(1),
    resume: z.boolean().default(false),
    maxSteps: z.number().int().positive().optional(),
    tokenizer: z.string().min(1).optional(),
    signal: z.custom<AbortSignal>((v) => v instanceof AbortSignal, "must be an AbortSignal").optional(),
    onStep: z.custom<(e: PretrainStepEvent) => void>((v) => typeof v === "function", "must be a function").optional(),
    onEval: z.custom<(e: PretrainEvalEvent) => void>((v) => typeof v === "function", "must be a function").optional(),
  })
  .strict();

export interface PretrainResult {
  /** Optimizer steps done in total (including resumed ones). */
  step: number;
  /** Training loss of every step so far, index = step - 1. */
  losses: number[];
  evals: { step: number; heldoutLoss: number }[];
  parameters: number;
  finished: boolean;
  aborted: boolean;
}

interface TrainState {
  format: "deepguard-pretrain-v1";
  step: number;
  losses: number[];
  evals: { step: number; heldoutLoss: number }[];
  config: Record<string, unknown>;
}

/** Row order: a fresh permutation of all rows per epoch, seeded by (seed, epoch); batch s = positions [sB, sB + B). */
class RowOrder {
  #epoch = -1;
  #perm: number[] = [];
  constructor(readonly rows: number, readonly seed: number) {}
  row(global: number): number {
    const epoch = Math.floor(global / this.rows);
    if (epoch !== this.#epoch) {
      this.#perm = shuffleInPlace(Array.from({ length: this.rows }, (_, i) => i), new Random(deriveSeed(this.seed, epoch)));
      this.#epoch = epoch;
    }
    return this.#perm[global % this.rows];
  }
}

/** Mean next-token CE of `model` over the first `maxRows` rows of a packed set, batchSize rows per call. */
export async function heldoutLoss(model: PretrainModel, tokens: Int32Array, width: number, maxRows: number, batchSize: number): Promise<number> {
  const rows = Math.min(maxRows, tokens.length / width);
  let sum = 0, count = 0;
  for (let r = 0; r < rows; r += batchSize) {
    const n = Math.min(batchSize, rows - r);
    const res = await model.step(tokens.subarray(r * width, (r + n) * width), width, false);
    sum += res.lossSum;
    count += res.targets;
  }
  return sum / count;
}

async function writeDirAtomic(dir: string, write: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = `${dir}.tmp-${process.pid}`;
  const old = `${dir}.old`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  await write(tmp);
  await syncDirectory(tmp);
  await rm(old, { recursive: true, force: true });
  if (await exists(dir)) await rename(dir, old);
  await rename(tmp, dir);
  await rm(old, { recursive: true, force: true });
}

const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"];

/** Writes the Hugging Face model (config.json, model.safetensors, generation_config.json, tokenizer files) into `dir`. */
export async function exportModel(model: PretrainModel, config: PretrainConfig, dir: string, tokenizer?: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const dtype = config.training.outputDtype;
  const hf: Record<string, unknown> = { ...config.hf, torch_dtype: dtype };
  if (tokenizer !== undefined) {
    for (const f of TOKENIZER_FILES) {
      const src = join(tokenizer, f);
      if (!(await exists(src))) continue;
      const tmp = join(dir, `.${f}.tmp-${process.pid}`);
      await copyFile(src, tmp);
      await rename(tmp, join(dir, f));
    }
  }
  const gen: Record<string, unknown> = {};
  if (hf.bos_token_id !== undefined) gen.bos_token_id = hf.bos_token_id;
  if (hf.eos_token_id !== undefined) gen.eos_token_id = hf.eos_token_id;
  await writeSafetensors(join(dir, "model.safetensors"), model.tensors(dtype), { format: "pt" });
  await writeJsonAtomic(join(dir, "generation_config.json"), gen);
  await writeJsonAtomic(join(dir, "config.json"), hf);
}

/** Trains (or resumes) and returns the loss history. Aborting via `signal` saves a resumable checkpoint first. */
export async function pretrain(options: PretrainOptions): Promise<PretrainResult> {
  const o = parseOptions(optionsSchema, options, "pretrain");
  const { model: mc, training: t } = o.config;
  const train = await readPacked(o.data);
  if (train.seqLen !== t.seqLen) throw new DeepGuardError("ERR_ARGUMENT", `${o.data}: packed seq_len ${train.seqLen} differs from training.seqLen ${t.seqLen}`);
  if (train.vocabSize > mc.vocabSize) throw new DeepGuardError("ERR_ARGUMENT", `${o.data}: vocabulary ${train.vocabSize} exceeds the model's vocab_size ${mc.vocabSize}`);
  const held = o.heldout === undefined ? undefined : await readPacked(o.heldout);
  if (held && held.seqLen !== t.seqLen) throw new DeepGuardError("ERR_ARGUMENT", `${o.heldout}: packed seq_len ${held.seqLen} differs from training.seqLen ${t.seqLen}`);
  const width = t.seqLen + 1;

  const model = new PretrainModel(mc, { computeDtype: t.computeDtype });
  const adamw = new AdamW(model.params, { beta1: t.beta1, beta2: t.beta2, eps: t.eps, weightDecay: t.weightDecay, noDecay: isNoDecay });
  const ckpt = join(o.out, "checkpoint");
  let state: TrainState = { format: "deepguard-pretrain-v1", step: 0, losses: [], evals: [], config: { ...o.config.hf, training: t } };
  if (o.resume) {
    const dir = (await exists(ckpt)) ? ckpt : `${ckpt}.old`;
    if (!(await exists(join(dir, "state.json")))) throw new DeepGuardError("ERR_TRAIN_CHECKPOINT", `nothing to resume: ${ckpt}/state.json does not exist`);
    let saved: TrainState;
    try {
      saved = JSON.parse(await readFile(join(dir, "state.json"), "utf8")) as TrainState;
    } catch (e) {
      throw new DeepGuardError("ERR_TRAIN_CHECKPOINT", `${dir}/state.json: ${(e as Error).message}`);
    }
    if (saved.format !== "deepguard-pretrain-v1" || !Number.isInteger(saved.step) || !Array.isArray(saved.losses) || saved.losses.length !== saved.step) {
      throw new DeepGuardError("ERR_TRAIN_CHECKPOINT", `${dir}/state.json is not a pretraining state`);
    }
    if (JSON.stringify(saved.config) !== JSON.stringify(state.config)) {
      throw new DeepGuardError("ERR_TRAIN_CHECKPOINT", `${dir} was trained with another config (model or training section differs)`);
    }
    await model.loadF32(join(dir, "model.safetensors"));
    const m: Record<string, Float32Array> = {}, v: Record<string, Float32Array> = {};
    for (const [name, p] of model.params) {
      m[name] = new Float32Array(p.length);
      v[name] = new Float32Array(p.length);
    }
    await readF32Into(join(dir, "optimizer.safetensors"), new Map(Object.entries(m)), model.shapes, "m.");
    await readF32Into(join(dir, "optimizer.safetensors"), new Map(Object.entries(v)), model.shapes, "v.");
    adamw.loadState({ step: saved.step, m, v });
    state = { ...saved, config: state.config };
  } else {
    model.initialize(t.seed, t.initStd);
  }

  const save = async () => {
    await writeDirAtomic(ckpt, async (tmp) => {
      await writeSafetensors(join(tmp, "model.safetensors"), model.tensors("float32"));
      const s = adamw.state();
      const opt: Record<string, TensorToWrite> = {};
      for (const [name, shape] of model.shapes) {
        for (const [k, arr] of [["m", s.m[name]], ["v", s.v[name]]] as const) {
          opt[`${k}.${name}`] = { dtype: "F32", shape, data: new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength) };
        }
      }
      await writeSafetensors(join(tmp, "optimizer.safetensors"), opt);
      await writeJsonAtomic(join(tmp, "state.json"), state);
    });
    await exportModel(model, o.config, o.out, o.tokenizer);
  };
  const evaluate = async () => {
    if (!held) return;
    const loss = await heldoutLoss(model, held.tokens, width, t.evalRows, t.batchSize);
    state.evals.push({ step: state.step, heldoutLoss: loss });
    o.onEval?.({ type: "eval", step: state.step, heldoutLoss: loss, perplexity: Math.exp(loss) });
  };

  const order = new RowOrder(train.rows, deriveSeed(t.seed, 0xda7a));
  const grads = [...model.grads.values()];
  const batch = new Int32Array(t.batchSize * width);
  const stopAt = Math.min(t.steps, o.maxSteps === undefined ? Infinity : state.step + o.maxSteps);
  const start = Date.now();
  let aborted = false;
  let tokensDone = 0;
  if (state.step === 0 && !o.resume) await evaluate();
  while (state.step < stopAt) {
    if (o.signal?.aborted) {
      aborted = true;
      break;
    }
    for (let b = 0; b < t.batchSize; b++) {
      const r = order.row(state.step * t.batchSize + b);
      batch.set(train.tokens.subarray(r * width, (r + 1) * width), b * width);
    }
    const { loss } = await model.step(batch, width, true);
    if (!Number.isFinite(loss)) throw new DeepGuardError("ERR_ARGUMENT", `training diverged at step ${state.step + 1} (loss ${loss}); lower training.lr`);
    const gradNorm = await clipGradNorm(grads, t.clip > 0 ? t.clip : Infinity);
    const lr = learningRate(state.step, { lr: t.lr, warmupSteps: t.warmupSteps, totalSteps: t.steps, decay: "cosine", minLrRatio: t.minLrRatio });
    await adamw.step(model.grads, lr);
    state.step++;
    state.losses.push(loss);
    tokensDone += t.batchSize * t.seqLen;
    const elapsed = (Date.now() - start) / 1000;
    o.onStep?.({ type: "step", step: state.step, totalSteps: t.steps, loss, lr, gradNorm, tokensPerSec: tokensDone / Math.max(elapsed, 1e-9), elapsedSec: elapsed });
    if ((t.evalEvery > 0 && state.step % t.evalEvery === 0) || state.step === t.steps) await evaluate();
    if (t.saveEvery > 0 && state.step % t.saveEvery === 0 && state.step < stopAt) await save();
  }
  await save();
  return { step: state.step, losses: state.losses, evals: state.evals, parameters: model.parameterCount, finished: state.step >= t.steps, aborted };
}
