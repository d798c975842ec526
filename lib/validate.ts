/**
 * Shared validation plumbing: reading JSON files, phrasing zod issues, parsing
 * option objects. Every error names the file, field or option at fault.
 */
import { readFile } from "node:fs/promises";
import { z } from "zod";
import { DeepGuardError, type ErrorCode } from "./errors.js";

type Issue = z.ZodError["issues"][number];

/** A zod issue's dotted field path (`prefix` first, "(root)" when empty) and whether the field is absent. */
export function issueField(issue: Issue, prefix = ""): { field: string; missing: boolean } {
  const path = prefix + issue.path.join(".");
  return {
    field: path || "(root)",
    missing: issue.code === "invalid_type" && /received undefined/.test(issue.message),
  };
}

/** `missing required field "x"` or `field "x": <zod message>`. */
export function describeIssue(issue: Issue, prefix = ""): string {
  const { field, missing } = issueField(issue, prefix);
  return missing ? `missing required field "${field}"` : `field "${field}": ${issue.message}`;
}

/**
 * Parsed JSON of a file; undefined when it does not exist and `optional`.
 * Unreadable files and invalid JSON throw `code`, naming the file.
 */
export async function readJsonFile(path: string, code: ErrorCode, optional = false): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if (optional && (err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new DeepGuardError(code, `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new DeepGuardError(code, `${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
}

/** Parses `value` (undefined or null -> {}) with `schema`, or throws ERR_ARGUMENT naming `what` and the option. */
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
