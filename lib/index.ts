export { Model, type LoadOptions, type ModelInfo, type ForwardOptions, type ForwardResult } from "./model.js";
export { ModelSession, type EvalOptions, type EvalResult, type HiddenStateSelection } from "./session.js";
export { Tokenizer, type EncodeOptions, type DecodeOptions } from "./tokenizer.js";
export {
  type GenerateOptions,
  type SamplingOptions,
  type GenerationChunk,
  type GenerationResult,
  type FinishReason,
} from "./generate.js";
export { parseModelConfig, readModelConfig, SUPPORTED_ARCHITECTURES, type ModelConfig, type Architecture } from "./config.js";
export { Matrix } from "./tensor.js";
export { LORA_TARGETS, type AdapterInfo, type LoraTarget } from "./adapter.js";
export { DeepGuardError } from "./errors.js";
