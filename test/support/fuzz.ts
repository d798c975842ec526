/**
 * Shared pieces of the fuzz suites (fuzz-files.test.ts, fuzz-api.test.ts):
 * the promise is "bad input from anyone gets a clear error with a code; the
 * process never crashes, hangs or corrupts state". Every case comes from a
 * seeded PRNG, so a failure names a mutation or call that reproduces.
 *
 * A test runs all its cases and collects the broken promises in a Findings,
 * then fails once listing them: the first finding does not hide the rest. A
 * native crash kills the process (the runner reports the suite as silent), a
 * hang is caught by a per-call time limit, corrupted state by comparing logits
 * bit for bit. Tests marked "pinned" reproduce bugs the fuzzing found, since
 * fixed, and guard against their return.
 */
import { copyFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { DeepGuardError, Model } from "../../lib/index.js";
import { tinySpecs, type TinySpec } from "./checkpoint.js";

/** The standard tiny Qwen2 with a tokenizer, for API misuse (text input is part of the surface). */
export const apiSpec = tinySpecs()["qwen2-f32-gqa-tied"];
/** A very small checkpoint for the file mutations: every mutated copy stays ~20 KB. */
export const fileSpec: TinySpec = { ...apiSpec, hidden: 16, heads: 2, kvHeads: 1, intermediate: 24, vocab: 40, tokenizer: false };
/** Longest a call may take before it counts as hung; a tiny model answers in milliseconds. */
export const HANG_MS = 5000;
/** The input of every logits comparison. */
export const FIXED_IDS = [1, 2, 3];
/** DG_FUZZ_VERBOSE=1 prints every generated case with its outcome. */
export const VERBOSE = process.env.DG_FUZZ_VERBOSE === "1";
/** DG_FUZZ_SEED=n explores other cases (added to every section's seed); DG_FUZZ_SCALE=k runs k times as many. */
export const SEED = Number(process.env.DG_FUZZ_SEED ?? 0);
export const SCALE = Number(process.env.DG_FUZZ_SCALE ?? 1);
/** Prints a case and its outcome when VERBOSE. */
export const trace = (what: string, outcome: string) => VERBOSE && console.log(`${outcome.padEnd(22)} ${what}`);

/** Unhandled rejections are recorded rather than crashing the run, and fail the test they happen in. */
const unhandled: string[] = [];
process.on("unhandledRejection", (err) => unhandled.push(`unhandled rejection: ${errorText(err)}`));

/** mulberry32: a small seeded PRNG, so every run generates the same cases. */
export class Rng {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  bytes(n: number): Buffer {
    return Buffer.from(Array.from({ length: n }, () => this.int(256)));
  }
}

/** How a call ended. */
export type Outcome<T> = { kind: "resolved"; value: T } | { kind: "rejected"; error: unknown } | { kind: "hung" };

/** Runs fn (sync throws count as rejections) and reports how it ended, or "hung" after `ms`. */
export async function settle<T>(fn: () => T | Promise<T>, ms = HANG_MS): Promise<Outcome<T>> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<Outcome<T>>((done) => (timer = setTimeout(() => done({ kind: "hung" }), ms)));
  const run = (async () => fn())().then(
    (value): Outcome<T> => ({ kind: "resolved", value }),
    (error: unknown): Outcome<T> => ({ kind: "rejected", error }),
  );
  try {
    return await Promise.race([run, hung]);
  } finally {
    clearTimeout(timer);
  }
}

/** One line for any thrown value: class, code and the start of the message. */
export function errorText(err: unknown): string {
  if (!(err instanceof Error)) return `non-Error ${show(err)}`;
  const code = (err as { code?: unknown }).code;
  return `${err.constructor.name}${typeof code === "string" ? ` ${code}` : ""}: ${err.message.slice(0, 160)}`;
}

/**
 * null when `err` keeps the promise: an Error with a string code "ERR_..." and a
 * message (a DeepGuardError when `strict`); else what is wrong with it.
 */
export function codedProblem(err: unknown, strict = false): string | null {
  if (!(err instanceof Error)) return `threw ${errorText(err)}`;
  const code = (err as { code?: unknown }).code;
  if (typeof code !== "string" || !code.startsWith("ERR_")) return `uncoded error: ${errorText(err)}`;
  if (strict && !(err instanceof DeepGuardError)) return `coded, but not a DeepGuardError: ${errorText(err)}`;
  if (err.message.trim().length === 0) return `${code} with an empty message`;
  return null;
}

/** Names that show() prints for objects such as sessions. */
export const labels = new WeakMap<object, string>();

/** A short, safe description of any fuzz value (symbols, bigints, typed arrays, sessions...). */
export function show(v: unknown, depth = 0): string {
  if (typeof v === "string") return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v);
  if (typeof v === "number") return Object.is(v, -0) ? "-0" : String(v);
  if (typeof v === "bigint") return `${v}n`;
  if (typeof v === "symbol") return v.toString();
  if (typeof v === "function") return "function";
  if (v === null || typeof v !== "object") return String(v);
  const label = labels.get(v);
  if (label) return label;
  if (v instanceof AbortSignal) return v.aborted ? "AbortSignal(aborted)" : "AbortSignal";
  if (ArrayBuffer.isView(v) && !(v instanceof DataView)) {
    const items = Array.from(v as unknown as ArrayLike<unknown>, (x) => show(x));
    return `${v.constructor.name}[${items.join(",")}]`;
  }
  if (depth > 4) return "...";
  if (Array.isArray(v)) return `[${v.map((x) => show(x, depth + 1)).join(", ")}]`;
  const proto = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) return v.constructor?.name ?? "object";
  return `{${Object.entries(v).map(([k, x]) => `${k}: ${show(x, depth + 1)}`).join(", ")}}`;
}

/** Collects broken promises (and unhandled rejections) and fails the test once, listing the first of them. */
export class Findings {
  readonly list: string[] = [];
  #unhandledAtStart = unhandled.length;
  add(what: string, problem: string): void {
    this.list.push(`${what}\n      -> ${problem}`);
  }
  assertNone(title: string): void {
    this.list.push(...unhandled.slice(this.#unhandledAtStart));
    if (this.list.length === 0) return;
    const shown = this.list.slice(0, 12).map((f) => `  - ${f}`);
    const more = this.list.length > shown.length ? [`  ... and ${this.list.length - shown.length} more`] : [];
    const err = new Error([`${title}: ${this.list.length} finding(s)`, ...shown, ...more].join("\n"));
    err.stack = err.message.split("\n")[0]; // uvu prints the message; the stack would repeat it
    throw err;
  }
}

/** Whether two float arrays are equal bit for bit. */
export function sameBits(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

let caseDirs = 0;

/** A fresh directory under `root` with copies of `files` from `from`. */
export async function caseDir(root: string, from: string, files: string[]): Promise<string> {
  const dir = join(root, `case-${caseDirs++}`);
  await mkdir(dir);
  for (const f of files) await copyFile(join(from, f), join(dir, f));
  return dir;
}

/**
 * Loads `dir`; a load that succeeds must also run forward(FIXED_IDS) to a
 * well-shaped result or a coded error. Returns the outcome kind for tallies.
 */
export async function loadAndRun(dir: string, mmap: boolean, what: string, findings: Findings): Promise<string> {
  const loaded = await settle(() => Model.load(dir, { mmap }));
  if (loaded.kind === "hung") {
    findings.add(what, `Model.load did not settle within ${HANG_MS} ms`);
    return "hung";
  }
  if (loaded.kind === "rejected") {
    const problem = codedProblem(loaded.error);
    if (problem) findings.add(what, `Model.load: ${problem}`);
    return problem ? "uncoded" : (loaded.error as DeepGuardError).code;
  }
  const model = loaded.value;
  try {
    const run = await settle(() => model.forward(FIXED_IDS));
    if (run.kind === "hung") findings.add(what, `loaded, but forward did not settle within ${HANG_MS} ms`);
    else if (run.kind === "rejected") {
      const problem = codedProblem(run.error);
      if (problem) findings.add(what, `loaded, but forward: ${problem}`);
    } else {
      const { logits } = run.value;
      const vocab = model.info.vocabSize;
      if (logits.rows !== FIXED_IDS.length || logits.cols !== vocab || logits.data.length !== FIXED_IDS.length * vocab) {
        findings.add(what, `loaded, but forward gave logits ${logits.rows}x${logits.cols} (${logits.data.length} values)`);
      }
    }
    return "loaded";
  } finally {
    model.dispose();
  }
}
