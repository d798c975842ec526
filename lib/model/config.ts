/**
 * config.json of a Hugging Face Llama / Qwen2 checkpoint, validated with zod and
 * normalized with the defaults transformers applies (LlamaConfig, Qwen2Config).
 */
import { z } from "zod";
import { DeepGuardError } from "../errors.js";
import type { NativeModelConfig } from "../native-types.js";
import { parseRopeScaling, ropeInverseFrequencies, type RopeScaling } from "./rope.js";
import { describeIssue, readJsonFile } from "../validate.js";

export const SUPPORTED_ARCHITECTURES = ["LlamaForCausalLM", "Qwen2ForCausalLM"] as const;
export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number];

// Sizes index int32 arrays in the engine: capping each at 2^31 - 1 (and the
// head-width products below) keeps every product of sizes far from overflow.
export const MAX_SIZE = 2 ** 31 - 1;
const positiveInt = z.number().int().positive().max(MAX_SIZE);
export const MAX_HEAD_DIM = 65536;
const tokenIds = z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative()), z.null()]);

const ropeScalingSchema = z
  .object({
    type: z.string().optional(),
    rope_type: z.string().optional(),
    factor: z.number().positive().optional(),
  })
  .loose()
  .nullable()
  .optional();

const rawConfigSchema = z
  .object({
    architectures: z.array(z.string()).min(1),
    model_type: z.string().optional(),
    hidden_size: positiveInt,
    intermediate_size: positiveInt,
    num_hidden_layers: positiveInt,
    num_attention_heads: positiveInt,
    num_key_value_heads: positiveInt.nullable().optional(),
    head_dim: positiveInt.nullable().optional(),
    vocab_size: positiveInt,
    rms_norm_eps: z.number().positive().optional(),
    rope_theta: z.number().positive().optional(),
    rope_scaling: ropeScalingSchema,
    tie_word_embeddings: z.boolean().optional(),
    max_position_embeddings: positiveInt.optional(),
    hidden_act: z.string().optional(),
    attention_bias: z.boolean().optional(),
    mlp_bias: z.boolean().optional(),
    use_sliding_window: z.boolean().optional(),
    bos_token_id: tokenIds.optional(),
    eos_token_id: tokenIds.optional(),
    torch_dtype: z.string().nullable().optional(),
  })
  .loose();

/** The normalized configuration the engine runs with. */
export interface ModelConfig {
  architecture: Architecture;
  modelType: string;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** rope_scaling ("linear" or "llama3"); null = plain RoPE. */
  ropeScaling: RopeScaling | null;
  tieWordEmbeddings: boolean;
  maxPositionEmbeddings: number;
  attentionBias: boolean;
  mlpBias: boolean;
  bosTokenId: number | null;
  eosTokenIds: number[];
  torchDtype: string | null;
}

function fail(where: string, message: string): never {
  throw new DeepGuardError("ERR_CONFIG", `${where}: ${message}`);
}

/** Validates a parsed config.json object; `where` names it in errors. */
export function parseModelConfig(json: unknown, where = "config.json"): ModelConfig {
  const parsed = rawConfigSchema.safeParse(json);
  if (!parsed.success) {
    fail(where, parsed.error.issues.map((i) => describeIssue(i)).join("; "));
  }
  const c = parsed.data;
  const architecture = c.architectures[0];
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(architecture)) {
    fail(where, `unsupported architecture "${architecture}" (supported: ${SUPPORTED_ARCHITECTURES.join(", ")})`);
  }
  const isQwen2 = architecture === "Qwen2ForCausalLM";
  if (c.hidden_act !== undefined && c.hidden_act !== "silu") {
    fail(where, `field "hidden_act": only "silu" is supported, got "${c.hidden_act}"`);
  }
  if (c.use_sliding_window) fail(where, `field "use_sliding_window": sliding-window attention is not supported`);

  const numHeads = c.num_attention_heads;
  const numKvHeads = c.num_key_value_heads ?? numHeads;
  if (numHeads % numKvHeads !== 0) {
    fail(where, `field "num_key_value_heads": ${numKvHeads} does not divide num_attention_heads ${numHeads}`);
  }
  if (c.head_dim == null && c.hidden_size % numHeads !== 0) {
    fail(where, `field "hidden_size": ${c.hidden_size} is not divisible by num_attention_heads ${numHeads}`);
  }
  const headDim = c.head_dim ?? c.hidden_size / numHeads;
  if (headDim % 2 !== 0) fail(where, `head dimension ${headDim} must be even for rotary embeddings`);
  // Real RoPE head dims are <= 512; the bound keeps the frequency table that
  // is built before the weights' shapes are checked small.
  if (headDim > MAX_HEAD_DIM) fail(where, `head dimension ${headDim} exceeds ${MAX_HEAD_DIM}`);
  if (numHeads * headDim > MAX_SIZE) {
    fail(where, `num_attention_heads x head_dim = ${numHeads * headDim} exceeds ${MAX_SIZE}`);
  }

  const ropeScaling = parseRopeScaling(c.rope_scaling, where);
  const eos = c.eos_token_id;
  return {
    architecture: architecture as Architecture,
    modelType: c.model_type ?? (isQwen2 ? "qwen2" : "llama"),
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numLayers: c.num_hidden_layers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: c.vocab_size,
    rmsNormEps: c.rms_norm_eps ?? 1e-6,
    ropeTheta: c.rope_theta ?? 10000,
    ropeScaling,
    tieWordEmbeddings: c.tie_word_embeddings ?? false,
    maxPositionEmbeddings: c.max_position_embeddings ?? (isQwen2 ? 32768 : 2048),
    attentionBias: isQwen2 ? true : (c.attention_bias ?? false),
    mlpBias: isQwen2 ? false : (c.mlp_bias ?? false),
    bosTokenId: typeof c.bos_token_id === "number" ? c.bos_token_id : null,
    eosTokenIds: eos == null ? [] : Array.isArray(eos) ? eos : [eos],
    torchDtype: c.torch_dtype ?? null,
  };
}

export async function readModelConfig(path: string): Promise<ModelConfig> {
  return parseModelConfig(await readJsonFile(path, "ERR_CONFIG"), path);
}

const generationConfigSchema = z.object({ eos_token_id: tokenIds.optional() }).loose();

/**
 * End-of-sequence ids from generation_config.json, which HF generate() stops on
 * (instruct models list e.g. <|im_end|> only there); [] when the file is absent.
 */
export async function readGenerationEosIds(path: string): Promise<number[]> {
  const json = await readJsonFile(path, "ERR_CONFIG", true);
  if (json === undefined) return [];
  const parsed = generationConfigSchema.safeParse(json);
  if (!parsed.success) fail(path, describeIssue(parsed.error.issues[0]));
  const eos = parsed.data.eos_token_id;
  return eos == null ? [] : Array.isArray(eos) ? eos : [eos];
}

export function toNativeConfig(c: ModelConfig): NativeModelConfig {
  const isQwen2 = c.architecture === "Qwen2ForCausalLM";
  return {
    hiddenSize: c.hiddenSize,
    numLayers: c.numLayers,
    numHeads: c.numHeads,
    numKvHeads: c.numKvHeads,
    headDim: c.headDim,
    intermediateSize: c.intermediateSize,
    vocabSize: c.vocabSize,
    rmsNormEps: c.rmsNormEps,
    ropeInvFreq: ropeInverseFrequencies(c.ropeTheta, c.headDim, c.ropeScaling),
    tieWordEmbeddings: c.tieWordEmbeddings,
    qkvBias: isQwen2 || c.attentionBias,
    oBias: !isQwen2 && c.attentionBias,
    mlpBias: c.mlpBias,
  };
}
