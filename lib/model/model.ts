/**
 * A loaded Hugging Face Llama / Qwen2 checkpoint: weights memory-mapped by the
 * native engine in their stored dtype, the tokenizer when the directory has one.
 *
 *   const model = await Model.load("/models/Qwen2.5-Coder-1.5B");
 *   const out = await model.forward(ids, { hiddenStates: "all" });
 *   for await (const piece of model.generate("def f():", { maxTokens: 64 })) process.stdout.write(piece.text);
 */
import { stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { readAdapter, type AdapterInfo } from "./adapter.js";
import { locateCheckpoint } from "./checkpoint.js";
import { readGenerationEosIds, readModelConfig, toNativeConfig, type ModelConfig } from "./config.js";
import { DEFAULT_MODEL_DIR, requireDefaultFolder } from "./default-model.js";
import { DeepGuardError, throwIfAborted, wrapNativeError } from "../errors.js";
import {
  generateTokens,
  resolveGenerateOptions,
  type GenerateOptions,
  type GenerationChunk,
  type GenerationResult,
  type GenerationContext,
} from "../generate/generate.js";
import { native } from "../native.js";
import { parseOptions, signalSchema } from "../validate.js";
import type { NativeModel } from "../native-types.js";
import { Scheduler, type SchedulerStats } from "../serve/scheduler.js";
import { z } from "zod";
import { evalBatch, ModelSession, toTokenArray, type EvalOptions, type EvalResult } from "./session.js";
import { Tokenizer } from "./tokenizer.js";

export interface LoadOptions {
  /**
   * true (default): memory-map the weights (instant, shared with the page cache).
   * false: read them into private memory backed by transparent huge pages, which
   * decodes ~20% faster (hardware prefetchers stop at each 4 KiB page of a
   * mapping) at the cost of reading the whole checkpoint at load.
   */
  mmap?: boolean;
  /**
   * Allow sequences longer than config.json's max_position_embeddings (default
   * false: eval/generate calls that would go beyond it fail with ERR_CONTEXT_LENGTH).
   */
  allowLongContext?: boolean;
  /**
   * Prompt tokens the scheduler prefills per iteration while other sequences
   * decode (a multiple of 4, at most 512; default 128): smaller keeps decoding
   * streams smoother while a long prompt arrives, larger prefills faster.
   */
  prefillChunk?: number;
  /**
   * Quantize the linear weights at load time into a block format (layouts in the
   * README, "Quantized weights"): "q8_0" (8.5 bits per weight), "q4_0" or "q4_k"
   * (4.5). Every q/k/v/o/gate/up/down matrix and the LM head are quantized (a
   * tied LM head gets its own quantized copy); embeddings, norms and biases keep
   * their stored precision. Runs on all cores.
   */
  quantize?: QuantFormat;
  /**
   * With `quantize`: keep the quantized weights in a cache file so the next load
   * maps it instead of quantizing. true: `<dir>/deepguard-<format>.dgq`; a string:
   * that path. The file records a fingerprint of the source (file sizes,
   * modification times, safetensors headers) and is rebuilt when it does not
   * match; it is written atomically (README, "Quantized weights").
   */
  quantCache?: boolean | string;
  /**
   * The KV cache's element type (README, "BF16 KV cache"): "bfloat16" stores
   * keys (after RoPE) and values rounded to BF16, half the memory and half the
   * bytes each decoded token reads per cached position; attention widens them
   * to f32 on load and computes in f32. "float32" keeps them exact. Default:
   * "bfloat16" for BF16 checkpoints and with `quantize`, else "float32"
   * (defaultKvCacheDtype).
   */
  kvCacheDtype?: KvCacheDtype;
  /** Called with the weights quantized so far while `quantize` runs. */
  onProgress?: (progress: { done: number; total: number }) => void;
  /**
   * What BF16 weight matrices multiply: "float32" activations (exact, as
   * transformers computes with float32 compute), or activations rounded to
   * "bfloat16" as a BF16 PyTorch model computes, which runs on AMX tiles
   * (Sapphire Rapids and later): several times faster prefill and batched
   * decode, and each sequence's result independent of the batch it is in.
   * "auto" (default): "bfloat16" where AMX is available (and DEEPGUARD_AMX is
   * not 0), else "float32". F32/F16 and quantized matrices ignore it.
   */
  activations?: "auto" | "float32" | "bfloat16";
  signal?: AbortSignal;
}

/** KV cache element types. */
export const KV_CACHE_DTYPES = ["float32", "bfloat16"] as const;
export type KvCacheDtype = (typeof KV_CACHE_DTYPES)[number];
/**
 * The KV cache dtype when Model.load is not told one (README, "BF16 KV cache",
 * has the numbers): "bfloat16" where the weights already carry BF16 or coarser
 * rounding (a BF16 checkpoint, or load-time quantization), since the measured
 * effect of a BF16 cache on the logits is well below that rounding's; "float32"
 * for F32 and F16 checkpoints, whose finer weights it would not hide under.
 */
export function defaultKvCacheDtype(weightsDtype: string, quantize?: QuantFormat): KvCacheDtype {
  return quantize !== undefined || weightsDtype === "BF16" ? "bfloat16" : "float32";
}

/** Load-time quantization formats. */
export const QUANT_FORMATS = ["q8_0", "q4_0", "q4_k"] as const;
export type QuantFormat = (typeof QUANT_FORMATS)[number];

export interface ModelInfo {
  directory: string;
  architecture: string;
  numLayers: number;
  hiddenSize: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  vocabSize: number;
  /** Dtype most weight bytes are stored in ("BF16", "F32", "F16"). */
  dtype: string;
  /** The load-time quantization format, or null. */
  quantization: QuantFormat | null;
  /** Dtype(s) the linear layers and LM head run in, e.g. "BF16", "Q8_0", "Q4_K+Q4_0". */
  linearDtype: string;
  /** Bytes of all linear weights and the LM head as the kernels read them (per decoded token). */
  linearBytes: number;
  /** What BF16 weights multiply (LoadOptions.activations, "auto" resolved). */
  activations: "float32" | "bfloat16";
  /** How the quantized-weights cache was used: "loaded", "written", or null (none). */
  quantCache: "loaded" | "written" | null;
  /** The KV cache's element type (Model.load's kvCacheDtype). */
  kvCacheDtype: KvCacheDtype;
  /** KV cache bytes per cached position of one session (all layers, keys and values). */
  kvCacheBytesPerToken: number;
  parameterCount: number;
  weightBytes: number;
  tieWordEmbeddings: boolean;
  tokenizer: boolean;
}

export interface ForwardOptions extends Omit<EvalOptions, "logits"> {
  /** Default "all": one row of logits per input token. */
  logits?: EvalOptions["logits"];
}

export interface ForwardResult extends EvalResult {
  tokens: Int32Array;
}

/** Native engines by model, for lib/train (internal: not re-exported from lib/index.ts). */
const engines = new WeakMap<Model, NativeModel>();

/** @internal The native engine behind `model` (throws ERR_DISPOSED once disposed). */
export function engineOf(model: Model): NativeModel {
  const e = engines.get(model);
  if (!e) throw new DeepGuardError("ERR_ARGUMENT", "not a loaded Model");
  return e;
}

const loadOptionsSchema = z
  .object({
    mmap: z.boolean().default(true),
    allowLongContext: z.boolean().default(false),
    prefillChunk: z
      .number()
      .int()
      .min(4)
      .max(512)
      .refine((n) => n % 4 === 0, "must be a multiple of 4")
      .default(128),
    quantize: z.enum(QUANT_FORMATS).optional(),
    quantCache: z.union([z.boolean(), z.string().min(1)]).optional(),
    kvCacheDtype: z.enum(KV_CACHE_DTYPES).optional(),
    onProgress: z.function().optional(),
    activations: z.enum(["auto", "float32", "bfloat16"]).default("auto"),
    signal: signalSchema,
  })
  .strict();

export class Model {
  readonly config: ModelConfig;
  /** null when the checkpoint has no tokenizer.json: text APIs then throw, id APIs work. */
  readonly tokenizer: Tokenizer | null;
  readonly info: ModelInfo;
  readonly #engine: NativeModel;
  readonly #scheduler: Scheduler;
  readonly #eos: ReadonlySet<number>;
  readonly #allowLongContext: boolean;
  #adapter: AdapterInfo | null = null;

  private constructor(
    config: ModelConfig,
    tokenizer: Tokenizer | null,
    engine: NativeModel,
    scheduler: Scheduler,
    info: ModelInfo,
    generationEos: number[],
    allowLongContext: boolean,
  ) {
    this.#allowLongContext = allowLongContext;
    this.config = config;
    this.tokenizer = tokenizer;
    this.#engine = engine;
    engines.set(this, engine);
    this.#scheduler = scheduler;
    this.info = info;
    // Generation stops at any end-of-sequence id that config.json,
    // generation_config.json or the tokenizer names.
    const eos = new Set([...config.eosTokenIds, ...generationEos]);
    if (tokenizer?.eosTokenId != null) eos.add(tokenizer.eosTokenId);
    this.#eos = eos;
  }

  /** The token ids generation stops at (see GenerateOptions.stopOnEos). */
  get eosTokenIds(): number[] {
    return [...this.#eos].sort((a, b) => a - b);
  }

  /**
   * Loads a checkpoint directory (config.json, safetensors weights, optional
   * tokenizer); with no directory, the package's default model (loadDefault).
   */
  static async load(directory?: string, options?: LoadOptions): Promise<Model> {
    if (directory === undefined) return Model.loadDefault(options);
    if (typeof directory !== "string" || directory.length === 0) {
      throw new DeepGuardError("ERR_ARGUMENT", "Model.load needs a checkpoint directory path");
    }
    const q = (options as { quantize?: unknown } | undefined)?.quantize;
    if (q !== undefined && !(QUANT_FORMATS as readonly unknown[]).includes(q)) {
      throw new DeepGuardError("ERR_QUANT_FORMAT", `Model.load option "quantize": unknown format ${JSON.stringify(q)}; expected one of ${QUANT_FORMATS.join(", ")}`);
    }
    const { mmap, allowLongContext, prefillChunk, quantize, quantCache, kvCacheDtype, onProgress, activations, signal } = parseOptions(
      loadOptionsSchema,
      options,
      "Model.load",
    );
    if (quantCache !== undefined && quantCache !== false && !quantize) {
      throw new DeepGuardError("ERR_ARGUMENT", `Model.load option "quantCache" needs "quantize"`);
    }
    const dir = resolve(directory);
    const st = await stat(dir).catch(() => null);
    if (!st?.isDirectory()) throw new DeepGuardError("ERR_CHECKPOINT", `${dir} is not a directory`);
    throwIfAborted(signal, "Model.load");
    const config = await readModelConfig(join(dir, "config.json"));
    const generationEos = await readGenerationEosIds(join(dir, "generation_config.json"));
    const files = await locateCheckpoint(dir);
    const tokenizer = await Tokenizer.fromDirectory(dir);
    throwIfAborted(signal, "Model.load");
    let engine: NativeModel;
    // Progress calls arrive on their own queue, possibly after the load resolves:
    // wait for the final one (done === total) so every call precedes our return.
    let progress: ((p: { done: number; total: number }) => void) | undefined;
    let progressDone: Promise<void> = Promise.resolve();
    let progressError: unknown = null;
    if (quantize && onProgress) {
      const user = onProgress as (p: { done: number; total: number }) => void;
      progressDone = new Promise<void>((resolveDone) => {
        progress = (p) => {
          try {
            if (progressError === null) user(p);
          } catch (err) {
            progressError = err ?? new Error("onProgress threw"); // rethrown once the load finishes
          }
          if (p.done === p.total) resolveDone();
        };
      });
    }
    try {
      engine = await native().loadModel(toNativeConfig(config), files.files, files.tensors, {
        mmap,
        activations,
        kvCache: (kvCacheDtype ?? defaultKvCacheDtype(files.dominantDtype, quantize)) === "bfloat16" ? "BF16" : "F32",
        ...(quantize ? { quantize } : {}),
        ...(progress ? { onProgress: progress } : {}),
        ...(quantize && quantCache
          ? { cacheFile: typeof quantCache === "string" ? resolve(quantCache) : join(dir, `deepguard-${quantize}.dgq`) }
          : {}),
      });
      await progressDone;
    } catch (err) {
      throw wrapNativeError(err, dir);
    }
    if (progressError !== null) {
      engine.dispose();
      throw progressError;
    }
    const nativeInfo = engine.info();
    const info: ModelInfo = {
      directory: dir,
      architecture: config.architecture,
      numLayers: config.numLayers,
      hiddenSize: config.hiddenSize,
      numHeads: config.numHeads,
      numKvHeads: config.numKvHeads,
      headDim: config.headDim,
      intermediateSize: config.intermediateSize,
      vocabSize: config.vocabSize,
      dtype: files.dominantDtype,
      quantization: quantize ?? null,
      linearDtype: nativeInfo.linearDtype,
      linearBytes: nativeInfo.linearBytes,
      activations: nativeInfo.activations === "bfloat16" ? "bfloat16" : "float32",
      quantCache: nativeInfo.quantCache === "loaded" || nativeInfo.quantCache === "written" ? nativeInfo.quantCache : null,
      kvCacheDtype: nativeInfo.kvCacheDtype === "BF16" ? "bfloat16" : "float32",
      kvCacheBytesPerToken: 2 * config.numLayers * config.numKvHeads * config.headDim * (nativeInfo.kvCacheDtype === "BF16" ? 2 : 4),
      parameterCount: nativeInfo.parameterCount,
      weightBytes: files.totalBytes,
      tieWordEmbeddings: config.tieWordEmbeddings,
      tokenizer: tokenizer !== null,
    };
    const scheduler = new Scheduler(engine, { prefillChunk, maxPositions: allowLongContext ? 0 : config.maxPositionEmbeddings });
    return new Model(config, tokenizer, engine, scheduler, info, generationEos, allowLongContext);
  }

  /** The attached LoRA adapter, if any. */
  get adapter(): AdapterInfo | null {
    return this.#adapter;
  }

  /**
   * The default code model shipped in the package (models/default/; its model
   * card says what it is: a demonstration model, not a production coder).
   * Guard.loadDefault(model) adds its trained guard and LoRA adapter.
   */
  static async loadDefault(options?: LoadOptions): Promise<Model> {
    return Model.load(await requireDefaultFolder(DEFAULT_MODEL_DIR, "config.json"), options);
  }

  /**
   * Attaches a PEFT LoRA adapter directory, replacing any previous one. Steps
   * already running finish with the adapter they started with.
   */
  async loadAdapter(directory: string): Promise<AdapterInfo> {
    if (typeof directory !== "string" || directory.length === 0) {
      throw new DeepGuardError("ERR_ARGUMENT", "loadAdapter needs an adapter directory path");
    }
    const { info, files, tensors } = await readAdapter(directory, this.config);
    const spec = { rank: info.rank, scale: info.scale, targets: info.targets, layers: info.layers };
    try {
      await this.#engine.loadAdapter(spec, files, tensors);
    } catch (err) {
      throw wrapNativeError(err, info.directory);
    }
    this.#adapter = info;
    return info;
  }

  /** Detaches the adapter: the base model again. */
  unloadAdapter(): void {
    try {
      this.#engine.unloadAdapter();
    } catch (err) {
      throw wrapNativeError(err);
    }
    this.#adapter = null;
  }

  /** The tokenizer, or a clear error when the checkpoint has none. */
  requireTokenizer(): Tokenizer {
    if (!this.tokenizer) {
      throw new DeepGuardError(
        "ERR_NO_TOKENIZER",
        `${this.info.directory} has no tokenizer.json: pass token ids instead of text`,
      );
    }
    return this.tokenizer;
  }

  tokenize(text: string, options?: { addSpecialTokens?: boolean }): number[] {
    return this.requireTokenizer().encode(text, options);
  }

  detokenize(ids: ArrayLike<number>, options?: { skipSpecialTokens?: boolean }): string {
    return this.requireTokenizer().decode(ids, options);
  }

  /** A fresh sequence with its own KV cache for incremental decoding. */
  createSession(): ModelSession {
    try {
      return new ModelSession(this.#engine, this.#scheduler, this.config);
    } catch (err) {
      throw wrapNativeError(err);
    }
  }

  /**
   * Releases the model: later calls throw ERR_DISPOSED. The weights are freed
   * once steps in flight finish and the model's sessions are disposed (or
   * garbage-collected).
   */
  dispose(): void {
    this.#engine.dispose();
    this.#scheduler.close();
    this.#adapter = null;
  }

  /** The serving scheduler's counters (requests in flight, iterations, batch sizes). */
  get servingStats(): SchedulerStats {
    return this.#scheduler.stats();
  }

  /**
   * Evaluates one new chunk for each session; they are admitted to the
   * scheduler together and stepped in the same batched iterations.
   */
  evalBatch(items: readonly { session: ModelSession; tokens: ArrayLike<number> }[], options: EvalOptions = {}): Promise<EvalResult[]> {
    return evalBatch(this.#scheduler, this.config, items, options);
  }

  /** Full forward pass over `input` (ids or text): logits and the chosen hidden states. */
  async forward(input: string | ArrayLike<number>, options?: ForwardOptions): Promise<ForwardResult> {
    const tokens = this.#toIds(input);
    const opts = options ?? {};
    // Non-objects go to eval() unchanged, whose validation names the problem.
    const evalOptions = typeof opts === "object" ? { ...opts, logits: opts.logits ?? "all" } : opts;
    const session = this.createSession();
    try {
      return { ...(await session.eval(tokens, evalOptions as EvalOptions)), tokens };
    } finally {
      session.dispose();
    }
  }

  /** Streams generated text; the generator's return value is the full GenerationResult. */
  async *generate(prompt: string | ArrayLike<number>, options?: GenerateOptions): AsyncGenerator<GenerationChunk, GenerationResult> {
    const opts = resolveGenerateOptions(options);
    const ids = this.#toIds(prompt);
    if (opts.defaultMaxTokens && !this.#allowLongContext) {
      // The default maxTokens never asks for more than the context holds.
      opts.maxTokens = Math.max(1, Math.min(opts.maxTokens, this.config.maxPositionEmbeddings - ids.length + 1));
    }
    const session = this.createSession();
    const ctx = {
      scheduler: this.#scheduler,
      tokenizer: this.tokenizer,
      eosTokenIds: this.#eos,
      numLayers: this.config.numLayers,
      hiddenSize: this.config.hiddenSize,
      vocabSize: this.config.vocabSize,
    };
    try {
      return yield* generateTokens(ctx, session, ids, opts);
    } finally {
      session.dispose(); // also when the consumer breaks out of the loop early
    }
  }

  /** @internal What guided generation (lib/generate/guided.ts) drives the scheduler with. */
  generationContext(): GenerationContext & { maxPositions: number } {
    return {
      scheduler: this.#scheduler,
      tokenizer: this.tokenizer,
      eosTokenIds: this.#eos,
      numLayers: this.config.numLayers,
      hiddenSize: this.config.hiddenSize,
      vocabSize: this.config.vocabSize,
      maxPositions: this.#allowLongContext ? Infinity : this.config.maxPositionEmbeddings,
    };
  }

  /** generate() collected into one result. */
  async complete(prompt: string | ArrayLike<number>, options?: GenerateOptions): Promise<GenerationResult> {
    const it = this.generate(prompt, options);
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
    }
  }

  #toIds(input: string | ArrayLike<number>): Int32Array {
    const ids = typeof input === "string" ? this.tokenize(input) : input;
    return toTokenArray(ids, this.config.vocabSize);
  }
}
