export { Model, type LoadOptions, type ModelInfo, type ForwardOptions, type ForwardResult } from "./model/model.js";
export { QUANT_FORMATS, type QuantFormat } from "./model/model.js";
export { ModelSession, type EvalOptions, type EvalResult, type HiddenStateSelection } from "./model/session.js";
export { Tokenizer, type EncodeOptions, type DecodeOptions } from "./model/tokenizer.js";
export {
  type GenerateOptions,
  type SamplingOptions,
  type GenerationChunk,
  type GenerationResult,
  type FinishReason,
} from "./generate/generate.js";
export { parseModelConfig, readModelConfig, SUPPORTED_ARCHITECTURES, type ModelConfig, type Architecture } from "./model/config.js";
export { Matrix } from "./model/tensor.js";
export { LORA_TARGETS, type AdapterInfo, type LoraTarget } from "./model/adapter.js";
export { DeepGuardError, ERROR_CODES, isErrorCode, type ErrorCode } from "./errors.js";
