/**
 * Every error DeepGuard throws on purpose is a DeepGuardError with a stable `code`
 * (e.g. ERR_SAFETENSORS_HEADER, ERR_CONFIG_FIELD) and a message that names the
 * file, tensor, field or option that is wrong.
 */
export class DeepGuardError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
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
    return new DeepGuardError(typeof code === "string" ? code : "ERR_NATIVE", prefix + err.message, { cause: err });
  }
  return new DeepGuardError("ERR_NATIVE", prefix + String(err));
}
