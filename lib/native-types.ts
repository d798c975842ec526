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
  dispose(): void;
}

export interface NativeStepResult {
  logits: Float32Array[];
  hidden: Float32Array[];
}

export interface NativeModel {
  createSession(): NativeSession;
  step(
    sessions: NativeSession[],
    tokens: Int32Array[],
    options: { logits: "none" | "last" | "all"; capture: number[]; adapter?: boolean },
  ): Promise<NativeStepResult>;
  info(): { parameterCount: number; mappedBytes: number; linearBytes: number; linearDtype: string; quantCache: string };
  loadAdapter(
    spec: { rank: number; scale: number; targets: string[]; layers: number[] },
    files: string[],
    tensors: NativeTensorRef[],
  ): Promise<void>;
  unloadAdapter(): void;
  dispose(): void;
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
      quantize?: "q8_0" | "q4_0" | "q4_k";
      onProgress?: (progress: { done: number; total: number }) => void;
      cacheFile?: string;
    },
  ): Promise<NativeModel>;
  sampleToken(logits: Float32Array, params: Partial<NativeSamplingParams>, u: number): number;
  measureBandwidth(bytes: number, repeats: number): Promise<{ readGBps: number; copyGBps: number }>;
  systemInfo(): { isa: string; bestIsa: string; threads: number; avx2: boolean; avx512f: boolean; avx512bf16: boolean };
}
