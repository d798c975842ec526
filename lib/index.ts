export { Model, type LoadOptions, type ModelInfo, type ForwardOptions, type ForwardResult } from "./model/model.js";
export { QUANT_FORMATS, type QuantFormat } from "./model/model.js";
export { DEFAULT_MODEL_DIR, DEFAULT_GUARD_DIR } from "./model/default-model.js";
export { KV_CACHE_DTYPES, defaultKvCacheDtype, type KvCacheDtype } from "./model/model.js";
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
export { DeepGuardError, ERROR_CODES, isErrorCode, throwIfAborted, type ErrorCode } from "./errors.js";
export { Dataset, changedMask, type DatasetOptions, type BatchOptions, type DroppedPairs, type PairSide, type SvenPair } from "./data/dataset.js";
export { type InvalidLine } from "./data/sven.js";
export { type TokenSpans } from "./model/token-offsets.js";
export {
  probeLayers,
  BAND_RULE,
  type ProbeOptions,
  type ProbeReport,
  type ProbeProgress,
  type LayerResult,
  type Pooling,
} from "./guard/probe.js";
export { probeSvg, probeTable, writeProbeReport } from "./guard/probe-report.js";
export {
  Trainer,
  type TrainerOptions,
  type LossWeights,
  type FitOptions,
  type FitResult,
  type StepEvent,
  type EvalEvent,
  type StepResult,
  type StepTerms,
  type TrainableGuard,
} from "./train/trainer.js";
export { LoraParameters, trainForward, type LoraOptions, type TrainPassOptions } from "./train/lora.js";
export { AdamW, clipGradNorm, type AdamWOptions, type AdamWState } from "./train/optimizer.js";
export { learningRate, type ScheduleOptions } from "./train/schedule.js";
export {
  pretrain,
  readPretrainConfig,
  parsePretrainConfig,
  PretrainModel,
  type PretrainConfig,
  type PretrainOptions,
  type PretrainResult,
  type PretrainStepEvent,
  type PretrainEvalEvent,
  type TrainingConfig,
} from "./train/pretrain.js";
export { trainTokenizer, DEFAULT_SPECIAL_TOKENS, type TrainTokenizerOptions, type TrainTokenizerResult } from "./tokenizer/train.js";
export { buildCorpus, readExclusionTexts, type BuildCorpusOptions, type CorpusManifest, type CorpusSource } from "./corpus/build.js";
export { packCorpus, readPacked, type PackOptions, type PackResult } from "./corpus/pack.js";
export { evaluate, summarize, readSamples, defaultCheckers, sampleSeed, type EvaluateOptions, type EvalResult as EvaluationResult, type EvalSummary, type EvalProgress, type SampleRecord, type RunConfig, type OracleSummary, type ScenarioSummary } from "./eval/evaluate.js";
export { loadScenarios, loadScenario, KNOWN_CWES, type Scenario, type Language, type LoadScenariosOptions } from "./eval/scenarios.js";
export { modelGenerator, type CompletionGenerator, type CompletionRequest } from "./eval/generator.js";
export { runChecker, type Checker, type Program, type Verdict } from "./eval/checker.js";
export { AttackChecker } from "./eval/oracles/attack.js";
export { BanditChecker, CppcheckChecker, FlawfinderChecker, CodeqlChecker } from "./eval/oracles/static.js";
export { runFunctionalTest, type FunctionalResult } from "./eval/functional.js";
export { cutCompletion, assembleProgram, parsePrograms, type CutResult, type ParseResult } from "./eval/completion.js";
export { passAtK, wilson, aggregate, type Estimate, type ScenarioCounts, type ScenarioMetrics } from "./eval/metrics.js";
export { runSandboxed, detectIsolation, type Isolation, type SandboxLimits, type RunOptions as SandboxRunOptions, type RunResult as SandboxRunResult } from "./eval/sandbox.js";
export { renderMarkdown, renderChart } from "./eval/report.js";
export {
  Guard,
  GuardScorer,
  AGGREGATIONS,
  type Aggregation,
  type GuardCreateOptions,
  type HiddenBatchItem,
  type GuardScore,
  type ForwardTrainResult,
} from "./guard/guard.js";
export { type GuardFitOptions, type GuardFitResult, type GuardStepInfo, type GuardEpochInfo, type GuardValidation, evaluateGuard } from "./guard/fit.js";
export { type ModelIdentity } from "./guard/identity.js";
export { Sampler, sampleToken } from "./generate/sampler.js";
export { type StepHook, type StepState, type StepDecision } from "./serve/hook.js";
export { type SchedulerStats } from "./serve/scheduler.js";
export {
  Generator,
  type GeneratorOptions,
  type GuidedGenerateOptions,
  type GuidedCompleteOptions,
  type GuidedPiece,
  type GuidedSample,
  type GuidedResult,
  type GuidedTimings,
} from "./generate/guided.js";
