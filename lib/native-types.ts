/** The shape of the compiled addon, as lib/ uses it. Bindings translate only. */

export interface NativeModelConfig {
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  vocabSize: number;
  rmsNormEps: number;
  /** [headDim / 2] rotary inverse frequencies, scaling already applied (lib/rope.ts). */
  ropeInvFreq: number[];
  tieWordEmbeddings: boolean;
  qkvBias: boolean;
  oBias: boolean;
  mlpBias: boolean;
}

export interface NativeTensorRef {
  name: string;
  file: number;
  dtype: string;
  shape: number[];
  offset: number;
  length: number;
}

export interface NativeSession {
  readonly length: number;
  readonly cacheBytes: number;
  truncate(n: number): void;
  /** Becomes a copy of other's KV cache (same model; neither in a step). */
  copyFrom(other: NativeSession): void;
  dispose(): void;
}

export interface NativeModel {
  createSession(): NativeSession;
  info(): { parameterCount: number; mappedBytes: number; linearBytes: number; linearDtype: string; quantCache: string; activations: string; kvCacheDtype: string };
  loadAdapter(
    spec: { rank: number; scale: number; targets: string[]; layers: number[] },
    files: string[],
    tensors: NativeTensorRef[],
  ): Promise<void>;
  unloadAdapter(): void;
  dispose(): void;
}

/** LoRA factors for one training pass: JS-owned f32 arrays, held by the pass until disposed. */
export interface NativeLoraTrainSpec {
  rank: number;
  scale: number;
  dropout: number;
  seed: number;
  factors: { layer: number; target: string; a: Float32Array; b: Float32Array; ga?: Float32Array; gb?: Float32Array }[];
}

/** A training forward's result and saved activations (bindings/lora_train_binding.cpp). */
export interface NativeTrainPass {
  readonly ce: number;
  readonly kl: number;
  readonly activationBytes: number;
  readonly hidden: Float32Array[];
  readonly logits?: Float32Array;
  backward(options: { ceCoef: number; klCoef: number; dHidden?: (Float32Array | null)[] }): Promise<void>;
  dispose(): void;
}

/** One request to the serving scheduler (bindings/serve_binding.cpp). */
export interface NativeServeRequest {
  kind: "eval" | "generate";
  session: NativeSession;
  tokens: Int32Array;
  /** Hidden-state indices in [0, L], ascending, unique. */
  capture: number[];
  adapter?: boolean;
  // eval
  logits?: "none" | "last" | "all";
  // generate
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  maxTokens?: number;
  stopIds?: number[];
  logitBias?: Float32Array | null;
  stepwise?: boolean;
  /** Stepwise: pause only before token g when g < pauseHead or g % pauseEvery == 0 (default 1: every token). */
  pauseEvery?: number;
  pauseHead?: number;
  /** Report each sampled token's log-probability (unbiased logits, temperature 1) in the event's logprobs. */
  logprobs?: boolean;
  /** Keep the session's KV cache when the generation ends successfully (default: freed). */
  keepSession?: boolean;
}

/** What the scheduler reports about a request after an iteration. */
export interface NativeServeEvent {
  id: number;
  /** generate: tokens sampled in this iteration. */
  tokens: number[];
  /** Tokens fed to the model in this iteration (eval: all of them, when done). */
  fed: number;
  /** generate with logprobs: each sampled token's log-probability under the unbiased logits. */
  logprobs?: Float32Array;
  /** [capture][fed][hidden] */
  hidden: Float32Array;
  /** eval, when done: [rows][vocab] */
  logits: Float32Array;
  /** stepwise generate: logits are ready; the sequence waits for resume(). */
  awaiting: boolean;
  done: boolean;
  finishReason?: "maxTokens" | "eos";
  code?: string;
  message?: string;
}

export interface NativeSchedulerHandle {
  submit(requests: NativeServeRequest[], onEvent: (ev: NativeServeEvent) => void): number[];
  cancel(id: number): void;
  resume(id: number, bias?: Float32Array | null): void;
  stats(): { active: number; iterations: number; maxBatchRows: number; prefillChunk: number };
  close(): void;
}

export interface NativeSamplingParams {
  temperature: number;
  topK: number;
  topP: number;
}

export interface NativeAddon {
  loadModel(
    config: NativeModelConfig,
    files: string[],
    tensors: NativeTensorRef[],
    options: {
      mmap: boolean;
      activations?: "auto" | "float32" | "bfloat16";
      quantize?: "q8_0" | "q4_0" | "q4_k";
      onProgress?: (progress: { done: number; total: number }) => void;
      cacheFile?: string;
      kvCache?: "F32" | "BF16";
    },
  ): Promise<NativeModel>;
  sampleToken(logits: Float32Array, params: Partial<NativeSamplingParams>, u: number, logitBias?: Float32Array): number;
  measureBandwidth(bytes: number, repeats: number): Promise<{ readGBps: number; copyGBps: number }>;
  /** One AdamW update of every tensor (lib/train/optimizer.ts). */
  adamwStep(
    tensors: { param: Float32Array; grad: Float32Array; m: Float32Array; v: Float32Array }[],
    config: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; step: number },
  ): Promise<void>;
  /** Global L2 norm of all grads (float64), scaled in place to maxNorm when above it; resolves to the norm before. */
  clipGradients(grads: Float32Array[], maxNorm: number): Promise<number>;
  /** Full-parameter training model (native/train/full_model.h); data/grad are zero-copy views of its f32 buffers. */
  fullModelCreate(config: NativeModelConfig, options: { bf16Compute: boolean }): NativeFullModel;
  /** rows [B * width] ids; train: grads := d(mean CE)/d(param). Resolves to the CE sum and the target count. */
  fullModelStep(handle: unknown, rows: Int32Array, width: number, train: boolean): Promise<{ lossSum: number; targets: number }>;
  fullModelLogits(handle: unknown, ids: Int32Array): Promise<Float32Array>;
  trainForward(
    model: NativeModel,
    ids: Int32Array,
    lora: NativeLoraTrainSpec | null,
    options: {
      capture: number[];
      targets?: Int32Array;
      ceWeights?: Float32Array;
      klWeights?: Float32Array;
      recompute: boolean;
      returnLogits: boolean;
    },
  ): Promise<NativeTrainPass>;
  /** Guard aggregator + analyzer over every token of a batch (native/guard). */
  guardForward(
    spec: NativeGuardSpec,
    params: Record<string, Float32Array>,
    batch: { ids: Int32Array; hidden: Float32Array[] }[],
    options: { train: boolean; seed: number; keepTape: boolean; fused?: Record<string, Float32Array> },
  ): Promise<{ tokens: Float32Array[]; tape?: NativeGuardTape }>;
  /** The attention aggregator folded into fc1 for eval-mode scoring (native/guard/guard.h FusedAttention). */
  guardFuse(spec: NativeGuardSpec, params: Record<string, Float32Array>): Promise<Record<string, Float32Array>>;
  /** Accumulates into grads; resolves to d(loss)/d(hidden) per item per layer. */
  guardBackward(
    spec: NativeGuardSpec,
    params: Record<string, Float32Array>,
    grads: Record<string, Float32Array>,
    tape: NativeGuardTape,
    dTokens: Float32Array[],
  ): Promise<Float32Array[][]>;
  NativeScheduler: new (model: NativeModel, options: { prefillChunk: number; maxPositions: number }) => NativeSchedulerHandle;
  systemInfo(): { isa: string; bestIsa: string; threads: number; avx2: boolean; avx512f: boolean; avx512bf16: boolean };
}

export interface NativeGuardSpec {
  hiddenSize: number;
  layers: number;
  vocabSize: number;
  aggregation: "attention" | "mean" | "last" | "weighted";
  dropout: number;
}

/** Opaque: the activations of one guardForward({ keepTape: true }), owned natively. */
export interface NativeGuardTape {
  readonly __guardTape: unique symbol;
}

export interface NativeFullModel {
  handle: unknown;
  params: { name: string; shape: number[]; data: Float32Array; grad: Float32Array }[];
}
