/** zod validation of option objects, with errors that name the option. */
import { z } from "zod";
import { DeepGuardError } from "./errors.js";

/** Parses `value` (undefined -> {}) with `schema`, or throws ERR_ARGUMENT naming `what` and the field. */
export function parseOptions<S extends z.ZodType>(schema: S, value: unknown, what: string): z.output<S> {
  const parsed = schema.safeParse(value ?? {});
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    const field = i.path.join(".");
    throw new DeepGuardError("ERR_ARGUMENT", `${what}${field ? ` option "${field}"` : " options"}: ${i.message}`);
  }
  return parsed.data;
}

export const signalSchema = z.instanceof(AbortSignal).optional();
