/**
 * Every error DeepGuard throws on purpose is a DeepGuardError with a stable `code`
 * from ERROR_CODES and a message that names the file, tensor, field or option that
 * is wrong. Native errors carry the same codes (test/errors.test.ts checks that every
 * code used anywhere in lib/, native/ or bindings/ is listed here).
 */
export const ERROR_CODES = [
  "ERR_ABORTED", // an AbortSignal fired; the reason is the error's cause
  "ERR_ADAPTER", // a LoRA adapter directory is invalid or does not fit the model
  "ERR_ARGUMENT", // a function argument or option is invalid
  "ERR_CHECKPOINT", // a checkpoint directory is invalid or inconsistent
  "ERR_CHECKPOINT_CHANGED", // a memory-mapped checkpoint file changed size on disk while the model was loaded
  "ERR_CONFIG", // config.json is invalid
  "ERR_CONTEXT_LENGTH", // a sequence would exceed max_position_embeddings (see Model.load's allowLongContext)
  "ERR_DISPOSED", // the model or session was disposed
  "ERR_DATASET", // a dataset file or line is unreadable or invalid (the message names file, line and field)
  "ERR_DATASET_EMPTY", // a dataset holds no usable records (after validation, filters and maxTokens)
  "ERR_DTYPE", // a tensor's dtype is wrong for its use
  "ERR_ENV", // a DEEPGUARD_* environment variable is invalid
  "ERR_FILE_OPEN", // a file cannot be opened or mapped
  "ERR_FILE_WRITE", // an output file cannot be written (nothing half-written is left)
  "ERR_GUARD_FILE", // a guard folder's guard.json / guard.safetensors is missing, corrupt or inconsistent
  "ERR_GUARD_MISMATCH", // a guard was made for another base model (the message names the differing field)
  "ERR_ISA_UNSUPPORTED", // the CPU lacks the requested instruction set
  "ERR_MISSING_TENSOR", // a tensor the model needs is absent
  "ERR_NATIVE", // an unexpected native failure (a bug: please report it)
  "ERR_NATIVE_LOAD", // the native addon cannot be loaded
  "ERR_NO_DEFAULT_MODEL", // the package's default model (models/default/) is not installed
  "ERR_NO_TOKENIZER", // a text API was called on a model without tokenizer.json
  "ERR_NON_FINITE", // logits to sample from hold NaN or +Infinity, or are all -Infinity
  "ERR_OUT_OF_MEMORY", // an allocation failed
  "ERR_PARSE_ARGS_UNKNOWN_OPTION", // CLI: an unknown flag
  "ERR_QUANT_BLOCK", // a matrix width is not a whole number of quantization blocks
  "ERR_QUANT_CACHE", // a quantized-weights cache file is unreadable, stale or cannot be written
  "ERR_QUANT_FORMAT", // an unknown quantization format was requested
  "ERR_SAFETENSORS", // a safetensors file is malformed
  "ERR_SANDBOX", // the sandbox for untrusted programs cannot be set up (a missing tool, a forced mode that does not work)
  "ERR_SCENARIO", // an evaluation scenario folder is invalid (a missing file, bad info.json, unknown CWE or language)
  "ERR_EVAL_RUN", // an evaluation output folder cannot be resumed (another configuration, a corrupt samples file)
  "ERR_SESSION_BUSY", // a session was stepped by two calls at once
  "ERR_TENSOR_SHAPE", // a tensor's shape does not fit the config
  "ERR_TRAIN_CHECKPOINT", // a training checkpoint to resume from is missing, incomplete, corrupt or for another model
  "ERR_TOKEN_ID", // a token id is outside the vocabulary
  "ERR_TOKENIZER", // tokenizer files are invalid
  "ERR_UNSUPPORTED_DTYPE", // a dtype the engine does not implement
  "ERR_USAGE", // CLI: wrong command-line usage
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

const KNOWN = new Set<string>(ERROR_CODES);

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === "string" && KNOWN.has(code);
}

export class DeepGuardError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DeepGuardError";
    this.code = code;
  }
}

/**
 * Native errors arrive as plain Errors with `code`; give them our class.
 * `where` (a file or directory) is put in front of the message when given.
 */
export function wrapNativeError(err: unknown, where?: string): DeepGuardError {
  const prefix = where ? `${where}: ` : "";
  if (err instanceof DeepGuardError && !where) return err;
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return new DeepGuardError(isErrorCode(code) ? code : "ERR_NATIVE", prefix + err.message, { cause: err });
  }
  return new DeepGuardError("ERR_NATIVE", prefix + String(err));
}

/** The error for an aborted call: ERR_ABORTED with the signal's reason as cause. */
export function abortError(signal: AbortSignal | undefined, what: string, detail?: string): DeepGuardError {
  return new DeepGuardError("ERR_ABORTED", `${what} was aborted${detail ? `: ${detail}` : ""}`, { cause: signal?.reason });
}

/** Throws abortError(signal, what) when `signal` has fired. */
export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw abortError(signal, what);
}
