// Fuzz-style robustness: "bad input from anyone gets a clear error with a code;
// the process never crashes, hangs or corrupts state". Every case is generated
// from a seeded PRNG, so a failure names a mutation or call that reproduces.
//
// Each test runs all its cases and collects the broken promises as findings,
// then fails once with a list of them: the first finding does not hide the rest.
// A native crash kills the process (the runner then reports the suite as not
// reporting; the one known crasher runs in a child process instead), a hang is
// caught by a per-call time limit, corrupted state by comparing logits bit for
// bit with those taken before the fuzzing. Tests marked "pinned" hold minimal
// reproductions of library bugs the fuzzing found (see the BUG comments).
import { spawn } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { DeepGuardError, Matrix, Model, ModelSession } from "../lib/index.js";
import { makeTinyAdapter } from "./support/adapter.js";
import { makeTinyCheckpoint, tinySpecs, type TinyCheckpoint, type TinySpec } from "./support/checkpoint.js";

// ---------------------------------------------------------------------------
// Fixtures: a very small checkpoint for the file mutations (cases 1-3: every
// mutated copy stays ~20 KB) and the standard tiny Qwen2 with a tokenizer for
// API misuse (case 4), where text input is part of the surface.
// ---------------------------------------------------------------------------

const apiSpec = tinySpecs()["qwen2-f32-gqa-tied"];
const fileSpec: TinySpec = { ...apiSpec, hidden: 16, heads: 2, kvHeads: 1, intermediate: 24, vocab: 40, tokenizer: false };
/** Longest a call may take before it counts as hung; a tiny model answers in milliseconds. */
const HANG_MS = 5000;
/** Time limit of the "is this session still usable" probe after each misuse call. */
const PROBE_MS = 2000;
const FIXED_IDS = [1, 2, 3];
/** DG_FUZZ_VERBOSE=1 prints every generated case with its outcome. */
const VERBOSE = process.env.DG_FUZZ_VERBOSE === "1";
/** DG_FUZZ_SEED=n explores other cases (added to every section's seed); DG_FUZZ_SCALE=k runs k times as many. */
const SEED = Number(process.env.DG_FUZZ_SEED ?? 0);
const SCALE = Number(process.env.DG_FUZZ_SCALE ?? 1);
const trace = (what: string, outcome: string) => VERBOSE && console.log(`${outcome.padEnd(22)} ${what}`);

let root = "";
let small: TinyCheckpoint;
let smallBytes: Buffer;
let api: TinyCheckpoint;
let caseDirs = 0;

/** Unhandled rejections are recorded rather than crashing the run, and fail the test they happen in. */
const unhandled: string[] = [];
process.on("unhandledRejection", (err) => unhandled.push(`unhandled rejection: ${errorText(err)}`));

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-fuzz-"));
  small = await makeTinyCheckpoint(join(root, "small"), fileSpec);
  smallBytes = await readFile(join(small.dir, "model.safetensors"));
  api = await makeTinyCheckpoint(join(root, "api"), apiSpec);
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/** mulberry32: a small seeded PRNG, so every run generates the same cases. */
class Rng {
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

type Outcome<T> = { kind: "resolved"; value: T } | { kind: "rejected"; error: unknown } | { kind: "hung" };

/** Runs fn (sync throws count as rejections) and reports how it ended, or "hung" after `ms`. */
async function settle<T>(fn: () => T | Promise<T>, ms = HANG_MS): Promise<Outcome<T>> {
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

function errorText(err: unknown): string {
  if (!(err instanceof Error)) return `non-Error ${show(err)}`;
  const code = (err as { code?: unknown }).code;
  return `${err.constructor.name}${typeof code === "string" ? ` ${code}` : ""}: ${err.message.slice(0, 160)}`;
}

/**
 * null when `err` keeps the promise: an Error with a string code "ERR_..." and a
 * message (a DeepGuardError when `strict`); else what is wrong with it.
 */
function codedProblem(err: unknown, strict = false): string | null {
  if (!(err instanceof Error)) return `threw ${errorText(err)}`;
  const code = (err as { code?: unknown }).code;
  if (typeof code !== "string" || !code.startsWith("ERR_")) return `uncoded error: ${errorText(err)}`;
  if (strict && !(err instanceof DeepGuardError)) return `coded, but not a DeepGuardError: ${errorText(err)}`;
  if (err.message.trim().length === 0) return `${code} with an empty message`;
  return null;
}

/** A short, safe description of any fuzz value (symbols, bigints, typed arrays, sessions...). */
const labels = new WeakMap<object, string>();
function show(v: unknown, depth = 0): string {
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

/** Collects broken promises and fails the test once, listing the first of them. */
class Findings {
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

function sameBits(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** A fresh directory under the temp root with copies of `files` from `from`. */
async function caseDir(from: string, files: string[]): Promise<string> {
  const dir = join(root, `case-${caseDirs++}`);
  await mkdir(dir);
  for (const f of files) await copyFile(join(from, f), join(dir, f));
  return dir;
}

/**
 * Loads `dir`; a load that succeeds must also run forward(FIXED_IDS) to a
 * well-shaped result or a coded error. Returns the outcome kind for tallies.
 */
async function loadAndRun(dir: string, mmap: boolean, what: string, findings: Findings): Promise<string> {
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

// ---------------------------------------------------------------------------
// safetensors mutations (cases 1 and 3). Each takes the pristine file bytes and
// returns a mutated copy: the length prefix, the JSON header (in place, raw
// edits that shift it, or re-encoded with a consistent prefix so that the
// deeper checks are reached), truncation, trailing garbage and dtype swaps.
// ---------------------------------------------------------------------------

interface Mutated {
  what: string;
  bytes: Buffer;
}
type TensorEntry = { dtype: unknown; shape: unknown[]; data_offsets: unknown[] };

function splitFile(file: Buffer) {
  const headerLength = Number(file.readBigUInt64LE(0));
  const text = file.subarray(8, 8 + headerLength).toString("utf8");
  return {
    headerLength,
    /** End of the JSON text proper (the rest of the header is space padding). */
    jsonEnd: 8 + Buffer.byteLength(text.trimEnd()),
    json: JSON.parse(text) as Record<string, unknown>,
    data: file.subarray(8 + headerLength),
  };
}

/** Re-encodes a header the way writeSafetensors does: padded to 8 bytes, with a matching length prefix. */
function encodeFile(header: unknown, data: Buffer): Buffer {
  const json = Buffer.from(JSON.stringify(header), "utf8");
  const padded = Buffer.alloc(Math.ceil(json.length / 8) * 8, " ");
  json.copy(padded);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(padded.length));
  return Buffer.concat([prefix, padded, data]);
}

const JSON_CHARS = ['"', "{", "}", "[", "]", ",", ":", " ", "-", ".", "e", "0", "9", "\\", "\u0000", "\u00ff"];
const DTYPE_VALUES: unknown[] = ["F16", "BF16", "F64", "I32", "U32", "I8", "BOOL", "F8_E4M3", "f32", "F33", "", 32, null, ["F32"]];

const safetensorsMutations: Array<(file: Buffer, r: Rng) => Mutated> = [
  function prefixByte(file, r) {
    const bytes = Buffer.from(file);
    const i = r.int(8);
    const old = bytes[i];
    const value = r.pick([old ^ (1 << r.int(8)), r.int(256), 0xff, 0]);
    bytes[i] = value === old ? old ^ 0x80 : value;
    return { what: `length prefix byte ${i}: ${old} -> ${bytes[i]}`, bytes };
  },
  function prefixValue(file, r) {
    const bytes = Buffer.from(file);
    const { headerLength } = splitFile(file);
    const value = r.pick([0, 1, 2, headerLength - 1 - r.int(8), headerLength + 1 + r.int(8), file.length - 8, file.length, 2 ** 32]);
    bytes.writeBigUInt64LE(BigInt(Math.max(0, value)), 0);
    return { what: `length prefix ${headerLength} -> ${Math.max(0, value)}`, bytes };
  },
  function headerChar(file, r) {
    const bytes = Buffer.from(file);
    const { jsonEnd } = splitFile(file);
    const at = 8 + r.int(jsonEnd - 8);
    const old = String.fromCharCode(bytes[at]);
    const ch = r.pick(JSON_CHARS.filter((c) => c !== old));
    bytes[at] = ch.charCodeAt(0);
    return { what: `header byte ${at}: ${JSON.stringify(old)} -> ${JSON.stringify(ch)}`, bytes };
  },
  function headerDigit(file, r) {
    const bytes = Buffer.from(file);
    const { jsonEnd } = splitFile(file);
    const digits: number[] = [];
    for (let i = 8; i < jsonEnd; i++) if (bytes[i] >= 0x30 && bytes[i] <= 0x39) digits.push(i);
    const at = r.pick(digits);
    const old = bytes[at] - 0x30;
    const digit = (old + 1 + r.int(9)) % 10;
    bytes[at] = 0x30 + digit;
    return { what: `header digit at ${at}: ${old} -> ${digit}`, bytes };
  },
  function headerSplice(file, r) {
    const { jsonEnd } = splitFile(file);
    const at = 8 + r.int(jsonEnd - 8);
    if (r.chance(0.5)) {
      const n = 1 + r.int(4);
      const bytes = Buffer.concat([file.subarray(0, at), file.subarray(at + n)]);
      return { what: `${n} header byte(s) deleted at ${at} (prefix unchanged)`, bytes };
    }
    const insert = Buffer.from(Array.from({ length: 1 + r.int(4) }, () => r.pick(JSON_CHARS)).join(""), "latin1");
    const bytes = Buffer.concat([file.subarray(0, at), insert, file.subarray(at)]);
    return { what: `${JSON.stringify(insert.toString("latin1"))} inserted at ${at} (prefix unchanged)`, bytes };
  },
  function structural(file, r) {
    const { json, data } = splitFile(file);
    const names = Object.keys(json).filter((k) => k !== "__metadata__");
    const name = r.pick(names);
    const e = json[name] as TensorEntry;
    let what: string;
    let header: unknown = json;
    switch (r.int(11)) {
      case 0: {
        const d = r.int(e.shape.length);
        const dim = e.shape[d] as number;
        e.shape[d] = r.pick([0, 1, dim + 1, dim * 2, 2 ** 31, 2 ** 40, 2 ** 53 + 2, -1, 1.5, "8", null]);
        what = `${name}.shape[${d}] = ${show(e.shape[d])}`;
        break;
      }
      case 1: {
        // Same byte count, other shape: reaches the native shape check.
        const total = (e.shape as number[]).reduce((a, b) => a * b, 1);
        const same = (v: unknown) => JSON.stringify(v) === JSON.stringify(e.shape);
        const shapes = [[...e.shape].reverse(), [total], [1, ...e.shape], [], [[total]], "x"].filter((v) => !same(v));
        e.shape = r.pick(shapes) as unknown[];
        what = `${name}.shape = ${show(e.shape)}`;
        break;
      }
      case 2: {
        const j = r.int(2);
        const v = e.data_offsets[j] as number;
        e.data_offsets[j] = r.pick([0, v + 1, v - 1, v + 4, v - 4, 2 ** 40, -4, 1.5, data.length, data.length + 4, "0"]);
        what = `${name}.data_offsets[${j}] = ${show(e.data_offsets[j])}`;
        break;
      }
      case 3: {
        // Swapping the ranges of two tensors of equal size gives a valid file with
        // swapped weights (loads); of different sizes, a length mismatch.
        const span = (t: TensorEntry) => (t.data_offsets[1] as number) - (t.data_offsets[0] as number);
        const equal = names.filter((n) => n !== name && span(json[n] as TensorEntry) === span(e));
        const other = json[r.pick(equal.length > 0 && r.chance(0.7) ? equal : names)] as TensorEntry;
        [e.data_offsets, other.data_offsets] = [other.data_offsets, e.data_offsets];
        what = `data_offsets of ${name} swapped with another tensor's`;
        break;
      }
      case 4:
        e.dtype = r.pick(DTYPE_VALUES);
        what = `${name}.dtype = ${show(e.dtype)}`;
        break;
      case 5:
        delete json[name];
        what = `entry ${name} deleted`;
        break;
      case 6:
        json[name] = r.pick([null, [], "x", 5, {}, { dtype: "F32" }]);
        what = `entry ${name} = ${show(json[name])}`;
        break;
      case 7:
        json[`${name}.copy`] = { ...e };
        what = `entry ${name} duplicated under another name (same bytes)`;
        break;
      case 8:
        json.__metadata__ = r.pick([{ format: 1 }, [], "pt", null, { format: "pt", nested: {} }]);
        what = `__metadata__ = ${show(json.__metadata__)}`;
        break;
      case 9:
        json[name.replace(/weight$/, "wieght")] = e;
        delete json[name];
        what = `entry ${name} renamed`;
        break;
      default:
        header = r.pick([[], "x", 5, null, {}, { __metadata__: { format: "pt" } }]);
        what = `whole header = ${show(header)}`;
    }
    return { what: `re-encoded header: ${what}`, bytes: encodeFile(header, data) };
  },
  function truncate(file, r) {
    const { headerLength } = splitFile(file);
    const at = r.pick([r.int(8), 8 + r.int(headerLength), 8 + headerLength + r.int(file.length - 8 - headerLength), file.length - 1]);
    return { what: `truncated to ${at} of ${file.length} bytes`, bytes: file.subarray(0, at) };
  },
  function append(file, r) {
    const extra = r.chance(0.2) ? Buffer.alloc(4) : r.bytes(1 + r.int(r.chance(0.5) ? 16 : 4096));
    return { what: `${extra.length} byte(s) appended`, bytes: Buffer.concat([file, extra]) };
  },
  function dtypeSwap(file, r) {
    // In place, same length: "F32" -> another 3-character string, once or everywhere.
    const bytes = Buffer.from(file);
    const { jsonEnd } = splitFile(file);
    const to = r.pick(['"I32"', '"U32"', '"F16"', '"F64"', '"I64"', '"f32"', '"F3 "', '"BF1"']);
    const every = r.chance(0.3);
    const header = bytes.subarray(0, jsonEnd).toString("latin1");
    const hits = [...header.matchAll(/"F32"/g)].map((m) => m.index!);
    for (const at of every ? hits : [r.pick(hits)]) bytes.write(to, at, "latin1");
    return { what: `"F32" -> ${to} ${every ? "everywhere" : "once"}`, bytes };
  },
];

/** Mutation i of a run: kinds in turn, so each gets its share of the cases. */
function mutateSafetensors(file: Buffer, r: Rng, i: number): Mutated {
  const m = safetensorsMutations[i % safetensorsMutations.length](file, r);
  return { what: `mutation ${i} (${m.bytes.length} bytes): ${m.what}`, bytes: m.bytes };
}

// ---------------------------------------------------------------------------
// Case 1: a corrupted model.safetensors. The reader in lib/io/safetensors.ts
// distrusts the header and the native loader checks every bound tensor, so
// each mutation must end in a coded error, or (for the few mutations that
// still make a valid file, e.g. swapped equal-size tensors) in a model that
// runs. Half the loads map the file, half read it into memory.
// ---------------------------------------------------------------------------

test("case 1: ~150 corrupted model.safetensors files load or fail with a code, never crash or hang", async () => {
  const r = new Rng(0x5afe + SEED);
  const findings = new Findings();
  const tally = new Map<string, number>();
  for (let i = 0; i < 150 * SCALE; i++) {
    const m = mutateSafetensors(smallBytes, r, i);
    const dir = await caseDir(small.dir, ["config.json"]);
    await writeFile(join(dir, "model.safetensors"), m.bytes);
    const kind = await loadAndRun(dir, i % 2 === 0, m.what, findings);
    trace(m.what, kind);
    tally.set(kind, (tally.get(kind) ?? 0) + 1);
    await rm(dir, { recursive: true, force: true });
  }
  findings.assertNone("corrupted model.safetensors");
  // Guard against a mutator that silently stopped mutating: nearly all must be caught.
  const loaded = tally.get("loaded") ?? 0;
  assert.ok(loaded <= 30 * SCALE, `${loaded} of ${150 * SCALE} mutated files loaded: ${show(Object.fromEntries(tally))}`);
  assert.ok(tally.has("ERR_SAFETENSORS") && tally.has("ERR_TENSOR_SHAPE"), show(Object.fromEntries(tally)));
});

// ---------------------------------------------------------------------------
// Case 2: a corrupted config.json, including sizes that would allocate absurd
// memory (hidden_size 1e9, vocab_size 2^31). The weights never change, so any
// size that disagrees with them must fail on a shape check before anything
// large is allocated: resident memory must not jump, and ERR_OUT_OF_MEMORY
// counts as a finding too.
// ---------------------------------------------------------------------------

const SIZE_KEYS = [
  "hidden_size",
  "intermediate_size",
  "num_hidden_layers",
  "num_attention_heads",
  "num_key_value_heads",
  "head_dim",
  "vocab_size",
  "max_position_embeddings",
];
const HUGE_SIZES = [1e9, 2 ** 31, 2 ** 31 - 1, 2 ** 32 + 2, 1e12, 2 ** 40, 2 ** 53 - 1, 2 ** 62, 1e308];
const WRONG_VALUES: unknown[] = ["64", "", -1, -64, 0, -0, 0.5, 1.5, 1e12, 1e-300, null, [], [64], {}, { value: 64 }, true, false];

type Config = Record<string, unknown>;
/** Curated first: the sizes the promise is about; then random edits. */
const curatedConfigEdits: Array<[string, (c: Config) => void]> = [
  ["hidden_size = 1e9", (c) => (c.hidden_size = 1e9)],
  ["num_attention_heads = 0", (c) => (c.num_attention_heads = 0)],
  ["vocab_size = 2^31", (c) => (c.vocab_size = 2 ** 31)],
  ["intermediate_size = 2^40", (c) => (c.intermediate_size = 2 ** 40)],
  ["num_hidden_layers = 1e9", (c) => (c.num_hidden_layers = 1e9)],
  ["head_dim = 2^40 (explicit)", (c) => (c.head_dim = 2 ** 40)],
  ["num_key_value_heads = 2^31, num_attention_heads = 2^31", (c) => (c.num_key_value_heads = c.num_attention_heads = 2 ** 31)],
  ["hidden_size = 2^40, num_attention_heads = 2^39", (c) => ((c.hidden_size = 2 ** 40), (c.num_attention_heads = 2 ** 39))],
  ["vocab_size = 1e9, hidden_size = 1e9", (c) => ((c.vocab_size = 1e9), (c.hidden_size = 1e9))],
  ["num_hidden_layers = 1 (fewer layers than stored: loads)", (c) => (c.num_hidden_layers = 1)],
  ["rms_norm_eps = 1e-50 (0 in f32)", (c) => (c.rms_norm_eps = 1e-50)],
  ["rope_scaling linear, factor 1e-320", (c) => (c.rope_scaling = { type: "linear", factor: 1e-320 })],
  ["rope_theta = 1e-300", (c) => (c.rope_theta = 1e-300)],
  ["architectures = LlamaForCausalLM on Qwen2 weights", (c) => (c.architectures = ["LlamaForCausalLM"])],
  ["tie_word_embeddings = false on a tied checkpoint", (c) => (c.tie_word_embeddings = false)],
];

function randomConfigEdit(r: Rng, c: Config): string {
  const keys = Object.keys(c);
  switch (r.int(4)) {
    case 0: {
      const key = r.pick(keys);
      delete c[key];
      return `delete ${key}`;
    }
    case 1: {
      const key = r.pick(r.chance(0.5) ? SIZE_KEYS : keys);
      c[key] = r.pick(WRONG_VALUES);
      return `${key} = ${show(c[key])}`;
    }
    case 2: {
      const key = r.pick(SIZE_KEYS);
      c[key] = r.pick(HUGE_SIZES);
      return `${key} = ${show(c[key])}`;
    }
    default: {
      // Plausible but inconsistent with the stored tensors.
      const key = r.pick(SIZE_KEYS);
      const old = typeof c[key] === "number" ? (c[key] as number) : 8;
      c[key] = r.pick([old * 2, Math.max(1, old / 2), old + 1, Math.max(1, old - 1), 1, 2]);
      return `${key} = ${show(c[key])}`;
    }
  }
}

function mutateConfig(r: Rng, i: number): { what: string; text: string } {
  const c = structuredClone(small.config) as Config;
  if (i < curatedConfigEdits.length) {
    const [what, edit] = curatedConfigEdits[i];
    edit(c);
    return { what, text: JSON.stringify(c) };
  }
  const text = JSON.stringify(c, null, 2);
  if (i % 10 === 9) {
    // Not JSON any more: truncated, or one character replaced.
    if (r.chance(0.5)) {
      const at = r.int(text.length);
      return { what: `config.json truncated to ${at} characters`, text: text.slice(0, at) };
    }
    const at = r.int(text.length);
    const ch = r.pick(JSON_CHARS);
    return { what: `config.json character ${at} -> ${JSON.stringify(ch)}`, text: text.slice(0, at) + ch + text.slice(at + 1) };
  }
  const edits = Array.from({ length: 1 + r.int(3) }, () => randomConfigEdit(r, c));
  return { what: edits.join(", "), text: JSON.stringify(c, null, 2) };
}

test("case 2: ~60 corrupted config.json files fail on shape checks before any large allocation", async () => {
  const r = new Rng(0xc0f1 + SEED);
  const findings = new Findings();
  const MAX_RSS_GROWTH = 256 * 2 ** 20;
  for (let i = 0; i < 60 * SCALE; i++) {
    const { what, text } = mutateConfig(r, i);
    const label = `config mutation ${i}: ${what}`;
    const dir = await caseDir(small.dir, ["model.safetensors"]);
    await writeFile(join(dir, "config.json"), text);
    const rssBefore = process.memoryUsage().rss;
    const kind = await loadAndRun(dir, i % 2 === 1, label, findings);
    trace(label, kind);
    const growth = process.memoryUsage().rss - rssBefore;
    if (kind === "ERR_OUT_OF_MEMORY") findings.add(label, "ERR_OUT_OF_MEMORY: a size was allocated before it was checked against the weights");
    if (growth > MAX_RSS_GROWTH) findings.add(label, `resident memory grew by ${(growth / 2 ** 20).toFixed(0)} MiB`);
    await rm(dir, { recursive: true, force: true });
  }
  findings.assertNone("corrupted config.json");
});

// ---------------------------------------------------------------------------
// Case 2, pinned: head sizes whose product overflows. A config whose
// num_attention_heads x head_dim wraps around 2^64 to the stored q/k/v width
// passes every shape check; the engine then loops over ~5e15 heads. Such a
// case can crash the process, so it runs in a child process and a crash is
// reported as a finding instead of killing this suite.
// ---------------------------------------------------------------------------

const LIB_URL = new URL("../lib/index.js", import.meta.url).href;

/**
 * Loads `dir` and runs forward(FIXED_IDS) in a child process, which prints one
 * JSON line per step as it goes ({"load": "resolved" | code}, then {"forward": ...}),
 * so a crash shows after which step it happened.
 */
function loadInChild(dir: string): Promise<{ code: number | null; signal: string | null; steps: Record<string, string>; output: string }> {
  const script = `
    import { Model } from ${JSON.stringify(LIB_URL)};
    const describe = (e) => typeof e?.code === "string" && e.code.startsWith("ERR_") ? e.code : "uncoded " + String(e);
    const step = (name, outcome) => console.log(JSON.stringify({ [name]: outcome }));
    let model;
    try { model = await Model.load(${JSON.stringify(dir)}); step("load", "resolved"); } catch (e) { step("load", describe(e)); }
    if (model) {
      try { await model.forward(${JSON.stringify(FIXED_IDS)}); step("forward", "resolved"); } catch (e) { step("forward", describe(e)); }
    }`;
  return new Promise((done) => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"], timeout: 20_000 });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    child.on("close", (code, signal) => {
      const steps: Record<string, string> = {};
      for (const line of output.split("\n")) if (line.startsWith("{")) Object.assign(steps, JSON.parse(line));
      done({ code, signal, steps, output: output.trim() });
    });
  });
}

test("case 2, pinned: num_attention_heads x head_dim overflowing int64 fails as a config error, not a crash", async () => {
  const findings = new Findings();
  // A checkpoint whose q, k and v projections are all 16 wide (2 heads of 8, no GQA).
  const mha = await makeTinyCheckpoint(join(root, "mha"), { ...fileSpec, kvHeads: fileSpec.heads, seed: 21 });
  // 4783906658119697 * 3856 = 2^64 + 16: in int64 the q/k/v widths wrap to the stored 16.
  // BUG: Model.load resolves, and forward() then segfaults (SIGSEGV) in the native engine.
  // Fix: reject products that overflow (or any size above 2^31 - 1) in lib/config.ts and in
  // native ModelConfig::check().
  const heads = 4783906658119697;
  const what = `config num_attention_heads = num_key_value_heads = ${heads}, head_dim = 3856 (product 2^64 + 16)`;
  const dir = await caseDir(mha.dir, ["model.safetensors"]);
  await writeFile(join(dir, "config.json"), JSON.stringify({ ...mha.config, num_attention_heads: heads, num_key_value_heads: heads, head_dim: 3856 }));
  const child = await loadInChild(dir);
  const { load, forward } = child.steps;
  if (child.signal !== null || child.code !== 0) {
    const after = forward ? `forward ${forward}` : load ? `Model.load ${load}` : "before Model.load settled";
    findings.add(what, `the process died (exit ${child.code}, signal ${child.signal}) after ${after}; output: ${child.output.slice(0, 300)}`);
  } else if (load === "resolved") {
    findings.add(what, `Model.load resolved (then forward: ${forward}); expected ERR_CONFIG`);
  } else if (load === undefined || load.startsWith("uncoded") || forward?.startsWith("uncoded")) {
    findings.add(what, `unexpected outcome: ${child.output.slice(0, 300)}`);
  }
  findings.assertNone("overflowing head sizes");
});

test("cases 1-2: after the corrupted loads the pristine checkpoint loads and computes the same logits", async () => {
  // The loads above must not have left anything behind (caches, thread pool, adapter state).
  const a = await Model.load(small.dir);
  const first = (await a.forward(FIXED_IDS)).logits.data;
  const b = await Model.load(small.dir, { mmap: false });
  const second = (await b.forward(FIXED_IDS)).logits.data;
  assert.ok(sameBits(first, second), "mapped and read-in pristine models disagree");
  assert.ok(first.every(Number.isFinite));
  a.dispose();
  b.dispose();
});

// ---------------------------------------------------------------------------
// Case 3: corrupted adapters. loadAdapter must fail with a coded error and
// leave the model exactly as it was: no adapter (or the previously attached
// one, when a mutated adapter replaces a valid one) and bit-identical logits.
// An adapter that does load must run and unload back to the base model.
// ---------------------------------------------------------------------------

const ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors"];

function mutateAdapterConfig(r: Rng, base: Config): { what: string; text: string } {
  const c = structuredClone(base);
  const curated: Array<[string, (c: Config) => void]> = [
    ["r = 3 (factors are rank 2)", (c) => (c.r = 3)],
    ["r = 1e9", (c) => (c.r = 1e9)],
    ["r = 0", (c) => (c.r = 0)],
    ["lora_alpha = 0", (c) => (c.lora_alpha = 0)],
    ["lora_alpha = 1e308 (scale overflows: loads)", (c) => (c.lora_alpha = 1e308)],
    ['target_modules = ["q_proj", "k_proj"] (no k_proj factors)', (c) => (c.target_modules = ["q_proj", "k_proj"])],
    ['target_modules = "all-linear"', (c) => (c.target_modules = "all-linear")],
    ['target_modules = ".*proj" (regex)', (c) => (c.target_modules = ".*proj")],
    ['target_modules = ["lm_head"]', (c) => (c.target_modules = ["lm_head"])],
    ["target_modules = []", (c) => (c.target_modules = [])],
    ["layers_to_transform = [5]", (c) => (c.layers_to_transform = [5])],
    ["layers_to_transform = 1 (a subset: loads)", (c) => (c.layers_to_transform = 1)],
    ["layers_to_transform = [-1]", (c) => (c.layers_to_transform = [-1])],
    ['peft_type = "LOHA"', (c) => (c.peft_type = "LOHA")],
    ["use_dora = true", (c) => (c.use_dora = true)],
    ['rank_pattern = {"q_proj": 4}', (c) => (c.rank_pattern = { q_proj: 4 })],
  ];
  if (r.chance(0.6)) {
    const [what, edit] = r.pick(curated);
    edit(c);
    return { what, text: JSON.stringify(c) };
  }
  if (r.chance(0.3)) {
    const text = JSON.stringify(c, null, 2);
    const at = r.int(text.length);
    return { what: `adapter_config.json truncated to ${at} characters`, text: text.slice(0, at) };
  }
  const key = r.pick(Object.keys(c));
  if (r.chance(0.3)) {
    delete c[key];
    return { what: `delete ${key}`, text: JSON.stringify(c) };
  }
  c[key] = r.pick([...WRONG_VALUES, ...HUGE_SIZES]);
  return { what: `${key} = ${show(c[key])}`, text: JSON.stringify(c) };
}

test("case 3: ~40 corrupted adapters fail with a code and leave the model's state untouched", async () => {
  const r = new Rng(0xada9 + SEED);
  const findings = new Findings();
  const adapterDir = join(root, "adapter");
  await makeTinyAdapter(adapterDir, small.weights, fileSpec.layers, {
    rank: 2,
    alpha: 4,
    targets: ["q_proj", "v_proj", "down_proj"],
    dtype: "F32",
    seed: 11,
  });
  const adapterConfig = JSON.parse(await readFile(join(adapterDir, "adapter_config.json"), "utf8")) as Config;
  const adapterBytes = await readFile(join(adapterDir, "adapter_model.safetensors"));
  const model = await Model.load(small.dir);
  const base = (await model.forward(FIXED_IDS)).logits.data;
  await model.loadAdapter(adapterDir);
  const adapted = (await model.forward(FIXED_IDS)).logits.data;
  model.unloadAdapter();
  assert.not.ok(sameBits(base, adapted), "the valid adapter should change the logits");

  for (let i = 0; i < 40 * SCALE; i++) {
    let what: string;
    const dir = await caseDir(adapterDir, ADAPTER_FILES);
    if (i % 2 === 0) {
      const m = mutateAdapterConfig(r, adapterConfig);
      await writeFile(join(dir, "adapter_config.json"), m.text);
      what = `adapter mutation ${i}: ${m.what}`;
    } else {
      const m = mutateSafetensors(adapterBytes, r, i);
      await writeFile(join(dir, "adapter_model.safetensors"), m.bytes);
      what = `adapter_model.safetensors ${m.what}`;
    }
    // Every 4th case replaces an attached valid adapter, which must survive the failure.
    const previous = i % 4 === 3;
    if (previous) await model.loadAdapter(adapterDir);
    const expectedLogits = previous ? adapted : base;
    const expectedAdapter = previous ? adapterDir : null;
    what += previous ? " (replacing an attached valid adapter)" : "";

    const out = await settle(() => model.loadAdapter(dir));
    trace(what, out.kind === "rejected" ? String((out.error as { code?: unknown }).code) : out.kind);
    if (out.kind === "hung") findings.add(what, `loadAdapter did not settle within ${HANG_MS} ms`);
    else if (out.kind === "rejected") {
      const problem = codedProblem(out.error, true);
      if (problem) findings.add(what, `loadAdapter: ${problem}`);
      if ((model.adapter?.directory ?? null) !== expectedAdapter) {
        findings.add(what, `after the failure model.adapter is ${show(model.adapter?.directory ?? null)}, expected ${show(expectedAdapter)}`);
      }
      const after = await settle(() => model.forward(FIXED_IDS));
      if (after.kind !== "resolved") findings.add(what, `after the failure forward ${after.kind}`);
      else if (!sameBits(after.value.logits.data, expectedLogits)) findings.add(what, "after the failure the logits changed");
    } else {
      const run = await settle(() => model.forward(FIXED_IDS));
      if (run.kind === "hung") findings.add(what, "loaded, but forward hung");
      else if (run.kind === "rejected" && codedProblem(run.error, true)) {
        findings.add(what, `loaded, but forward: ${codedProblem(run.error, true)}`);
      }
      model.unloadAdapter();
      const after = (await model.forward(FIXED_IDS)).logits.data;
      if (model.adapter !== null || !sameBits(after, base)) findings.add(what, "unloadAdapter did not restore the base model");
    }
    if (model.adapter) model.unloadAdapter();
    await rm(dir, { recursive: true, force: true });
  }
  findings.assertNone("corrupted adapters");
  assert.is(model.adapter, null);
  assert.ok(sameBits((await model.forward(FIXED_IDS)).logits.data, base), "base logits changed after the adapter fuzzing");
  model.dispose();
});

// ---------------------------------------------------------------------------
// Case 4: API misuse. Seeded random calls of forward, session.eval, evalBatch
// and complete (plus truncate, Model.load and loadAdapter), with junk where an
// argument or option is expected. Each must resolve (to a well-formed result)
// or reject with a coded DeepGuardError, or an AbortError when an aborted
// signal was passed. After each call, every real session it touched must still
// answer (a rejected call must not leave a session's queue locked); at the end
// the model must give the same logits, bit for bit, as before.
// ---------------------------------------------------------------------------

/** Junk values; factories, so mutable ones are fresh per use. */
const JUNK: Array<() => unknown> = [
  () => NaN,
  () => -1,
  () => 0,
  () => -0,
  () => 1.5,
  () => 2 ** 31,
  () => 1e300,
  () => -Infinity,
  () => "abc",
  () => "",
  () => null,
  () => undefined,
  () => true,
  () => ({}),
  () => ({ length: 3 }),
  () => ({ length: -1 }),
  () => ({ length: 2 ** 40 }),
  () => ({ 0: 1, length: 1 }),
  () => [],
  () => [NaN],
  () => [1, "2"],
  () => [-1],
  () => [2 ** 31],
  () => [apiSpec.vocab],
  () => [[1, 2]],
  () => new Float32Array([1.5, 2]),
  () => new Float64Array([1, 2]),
  () => new Uint8Array([1, 2]),
  () => new BigInt64Array([1n]),
  () => Symbol("junk"),
  () => () => 1,
  () => new Date(0),
  () => new Map([[0, 1]]),
  () => Object.create(null),
  () => 2n,
];

interface Call {
  what: string;
  run: () => unknown;
  /** Real sessions of the fuzzed model the call touches: probed afterwards. */
  sessions: ModelSession[];
  /** An AbortError is an acceptable outcome. */
  abortable: boolean;
}

/**
 * Generates the random calls; sessions and signals it creates are tracked per
 * call. Each call draws a "mess" level (the chance that any one argument or
 * option is bad): at 0 the call is valid and reaches the native engine, so
 * successes, mid-flight aborts and concurrent steps get their share too.
 */
class CallMaker {
  shared: ModelSession;
  #fresh: ModelSession[] = [];
  #abortable = false;
  #mess = 0;

  constructor(
    readonly r: Rng,
    readonly model: Model,
    readonly foreign: Model,
  ) {
    this.shared = this.#session("sharedSession");
  }

  #session(label: string): ModelSession {
    const s = this.model.createSession();
    labels.set(s, label);
    return s;
  }

  /** Whether this argument or option should be a bad one. */
  bad(): boolean {
    return this.r.chance(this.#mess);
  }

  junk(): unknown {
    return this.r.pick(JUNK)();
  }

  /** Valid ids (several array kinds) or text; when bad, near-valid (one junk element) or junk. */
  tokens(): unknown {
    const r = this.r;
    const ids = () => Array.from({ length: 1 + r.int(6) }, () => r.int(apiSpec.vocab));
    if (!this.bad()) {
      const roll = r.next();
      if (roll < 0.6) return ids();
      if (roll < 0.8) return r.pick([Int32Array, Uint16Array, Float64Array]).from(ids());
      return r.pick(["def f():", "x", "  \n\t", "é✓😀", "\ud800", "<|endoftext|>", "SELECT * FROM t", "a".repeat(300)]);
    }
    if (r.chance(0.5)) {
      const near: unknown[] = ids();
      near[r.int(near.length)] = this.junk();
      return near;
    }
    return r.chance(0.2) ? "" : this.junk();
  }

  /** A live signal, one aborted already or mid-flight, or (when bad) junk. */
  signal(): unknown {
    if (this.bad()) return this.junk();
    switch (this.r.int(3)) {
      case 0:
        return new AbortController().signal;
      case 1:
        this.#abortable = true;
        return AbortSignal.abort();
      default: {
        // Aborted while the call is in flight (or not, if it is quick).
        this.#abortable = true;
        const c = new AbortController();
        setTimeout(() => c.abort(), 0);
        return c.signal;
      }
    }
  }

  /** Eval / forward options: absent, or an object whose fields may be bad; when bad, null or junk. */
  evalOptions(): unknown {
    const r = this.r;
    if (r.chance(0.15)) return undefined;
    if (this.bad() && r.chance(0.3)) return r.chance(0.4) ? null : this.junk();
    const o: Record<string, unknown> = {};
    const bad = () => this.bad();
    if (r.chance(0.5)) o.logits = bad() ? r.pick<unknown>(["first", "ALL", "", this.junk()]) : r.pick(["all", "last", "none"]);
    if (r.chance(0.4)) {
      o.hiddenStates = bad()
        ? r.pick<unknown>([[3], [-4], [1.5], ["1"], [2 ** 31], [NaN], this.junk()])
        : r.pick<unknown>(["all", "none", [0], [-1], [0, 2], [2, 0, 0], [], [-0], [-3, 2]]);
    }
    if (r.chance(0.2)) o.adapter = bad() ? this.junk() : r.chance(0.5);
    if (r.chance(0.2)) o.signal = this.signal();
    if (bad() && r.chance(0.2)) o[r.pick(["logit", "hidden_states", "Signal"])] = "all";
    return o;
  }

  /** generate options: valid maxTokens values are small, so that no call runs long. */
  generateOptions(): unknown {
    const r = this.r;
    if (this.bad() && r.chance(0.3)) return r.pick<unknown>([undefined, null, this.junk()]);
    const o: Record<string, unknown> = {};
    const field = (valid: unknown[], invalid: unknown[]) => (this.bad() ? r.pick(invalid) : r.pick(valid));
    if (r.chance(0.95)) o.maxTokens = field([1, 2, 3, 5], [0, -1, 1.5, "2", null, 1e9, NaN, Infinity]);
    if (r.chance(0.3)) o.temperature = field([0, 0.7, 1, 2], [-1, NaN, Infinity, "1"]);
    if (r.chance(0.3)) o.topK = field([0, 1, 5, 1e9], [-1, 1.5, "5"]);
    if (r.chance(0.3)) o.topP = field([1, 0.9, 0.01], [0, -0.1, 1.5, NaN]);
    if (r.chance(0.3)) o.seed = field([0, 1, 42, 2 ** 53 - 1], [-1, 1.5, 2 ** 53, "7"]);
    if (r.chance(0.2)) o.stopStrings = field([[], ["\n"], ["a", "b"], ["\ud800"]], [[""], "x", [1]]);
    if (r.chance(0.2)) o.stopOnEos = field([true, false], ["yes", 1]);
    if (r.chance(0.15)) o.signal = this.signal();
    if (this.bad() && r.chance(0.2)) o[r.pick(["max_tokens", "stop", "top_p"])] = 3;
    return o;
  }

  /** A real session: fresh or the shared one; when bad, a disposed one or another model's. */
  session(): ModelSession {
    if (!this.bad()) {
      if (this.r.chance(0.3)) return this.shared;
      const s = this.#session("freshSession");
      this.#fresh.push(s);
      return s;
    }
    if (this.r.chance(0.5)) {
      const s = this.#session("disposedSession");
      s.dispose();
      return s;
    }
    const s = this.foreign.createSession();
    labels.set(s, "foreignModelSession");
    return s;
  }

  batchItems(): unknown {
    const r = this.r;
    if (this.bad() && r.chance(0.1)) return this.junk();
    return Array.from({ length: 1 + r.int(4) }, () => {
      if (!this.bad() || r.chance(0.5)) return { session: this.session(), tokens: this.tokens() };
      return r.pick<() => unknown>([
        () => null,
        () => ({}),
        () => ({ session: this.shared }),
        () => ({ tokens: [1] }),
        () => ({ session: {}, tokens: [1] }),
        () => ({ session: this.shared.native, tokens: [1] }),
        () => "item",
      ])();
    });
  }

  /** One random call, with the real sessions it may touch. */
  next(): Call {
    const r = this.r;
    this.#fresh = [];
    this.#abortable = false;
    this.#mess = r.pick([0, 0, 0.1, 0.3, 0.6]);
    let what: string;
    let run: () => unknown;
    const model = this.model;
    const roll = r.next();
    if (roll < 0.25) {
      const input = this.tokens();
      const options = this.evalOptions();
      what = `model.forward(${show(input)}, ${show(options)})`;
      run = () => model.forward(input as never, options as never);
    } else if (roll < 0.5) {
      const s = this.session();
      const input = this.tokens();
      const options = this.evalOptions();
      what = `${show(s)}.eval(${show(input)}, ${show(options)})`;
      run = () => s.eval(input as never, options as never);
    } else if (roll < 0.72) {
      const items = this.batchItems();
      const options = this.evalOptions();
      what = `model.evalBatch(${show(items)}, ${show(options)})`;
      run = () => model.evalBatch(items as never, options as never);
    } else if (roll < 0.9) {
      const input = this.tokens();
      const options = this.generateOptions();
      what = `model.complete(${show(input)}, ${show(options)})`;
      run = () => model.complete(input as never, options as never);
    } else if (roll < 0.95) {
      const shared = this.shared;
      const n = r.pick<unknown>([0, 1, -1, 1.5, NaN, shared.length, shared.length + 1, "0", null, 2 ** 31]);
      what = `sharedSession.truncate(${show(n)}) at length ${shared.length}`;
      run = () => shared.truncate(n as never);
    } else if (roll < 0.98) {
      const dir = r.pick<unknown>([api.dir, join(api.dir, "config.json"), join(root, "missing"), ...JUNK.slice(0, 14).map((f) => f())]);
      const options = r.chance(0.5) ? this.junk() : { mmap: r.chance(0.5) ? this.junk() : false, signal: this.signal() };
      what = `Model.load(${show(dir)}, ${show(options)})`;
      run = async () => {
        const m = await Model.load(dir as never, options as never);
        m.dispose();
      };
    } else {
      const dir = r.pick<unknown>([api.dir, join(root, "missing"), "", null, 5, {}]);
      what = `model.loadAdapter(${show(dir)})`;
      run = () => model.loadAdapter(dir as never);
    }
    const sessions = [this.shared, ...this.#fresh];
    return { what, run, sessions, abortable: this.#abortable };
  }
}

/** null if `value` is a well-formed result of the call, else what is wrong. */
function resultProblem(value: unknown): string | null {
  const checkEval = (e: unknown): string | null => {
    const res = e as { logits?: unknown; hiddenStates?: unknown };
    if (!(res.logits instanceof Matrix)) return `result has no logits Matrix: ${show(res)}`;
    const { logits } = res;
    if (logits.cols !== apiSpec.vocab || logits.data.length !== logits.rows * logits.cols) return `logits ${logits.rows}x${logits.cols}`;
    if (!logits.data.every(Number.isFinite)) return "non-finite logits";
    if (!(res.hiddenStates instanceof Map)) return "hiddenStates is not a Map";
    for (const [layer, m] of res.hiddenStates as Map<number, Matrix>) {
      if (!Number.isInteger(layer) || layer < 0 || layer > apiSpec.layers) return `hidden state index ${layer}`;
      if (m.cols !== apiSpec.hidden || !m.data.every(Number.isFinite)) return `hidden state ${layer} malformed`;
    }
    return null;
  };
  if (value === undefined) return null; // truncate, Model.load (disposed inside), loadAdapter
  if (Array.isArray(value)) {
    for (const v of value) {
      const p = checkEval(v);
      if (p) return p;
    }
    return null;
  }
  const v = value as { logits?: unknown; tokens?: unknown; text?: unknown; finishReason?: unknown };
  if ("finishReason" in v) {
    const tokens = v.tokens as number[];
    if (typeof v.text !== "string" || !["maxTokens", "eos", "stopString"].includes(v.finishReason as string)) return `complete(): ${show(v)}`;
    if (!tokens.every((t) => Number.isInteger(t) && t >= 0 && t < apiSpec.vocab)) return `complete() tokens ${show(tokens)}`;
    return null;
  }
  if ("logits" in v) return checkEval(v);
  return `unexpected result ${show(value)}`;
}

test("case 4: ~200 seeded API misuse calls resolve or fail with a code; the model's logits stay bit-identical", async () => {
  const r = new Rng(0xab1 + SEED);
  const findings = new Findings();
  const model = await Model.load(api.dir);
  const foreign = await Model.load(api.dir);
  const before = (await model.forward(FIXED_IDS)).logits.data;
  const maker = new CallMaker(r, model, foreign);
  const deadSessions = new WeakSet<ModelSession>();
  let hangProbes = 0;

  /** A session the call touched must still evaluate; a locked one is a finding (probed at most 3 times in all). */
  const probe = async (call: Call) => {
    for (const s of call.sessions) {
      if (deadSessions.has(s) || hangProbes >= 3) continue;
      const out = await settle(() => s.eval([1], { logits: "last" }), PROBE_MS);
      if (out.kind === "resolved") continue;
      if (out.kind === "hung") hangProbes++;
      const why = out.kind === "hung" ? `eval hangs (queue left locked?)` : codedProblem(out.error, true) ?? errorText(out.error);
      findings.add(call.what, `afterwards ${show(s)}.eval([1]) fails: ${why}`);
      deadSessions.add(s);
      if (s === maker.shared) maker.shared = model.createSession();
    }
  };

  const judge = async (call: Call) => {
    const out = await settle(call.run);
    trace(call.what, out.kind === "rejected" ? String((out.error as { code?: unknown }).code ?? (out.error as Error).name) : out.kind);
    if (out.kind === "hung") findings.add(call.what, `did not settle within ${HANG_MS} ms`);
    else if (out.kind === "resolved") {
      const problem = resultProblem(out.value);
      if (problem) findings.add(call.what, `resolved to a malformed result: ${problem}`);
    } else {
      const err = out.error;
      const aborted = call.abortable && err instanceof Error && err.name === "AbortError";
      const problem = aborted ? null : codedProblem(err, true);
      if (problem) findings.add(call.what, problem);
    }
  };

  let calls = 0;
  while (calls < 200 * SCALE) {
    // Mostly one call at a time; sometimes several at once, sharing sessions.
    const group = Array.from({ length: r.chance(0.1) ? 2 + r.int(2) : 1 }, () => maker.next());
    calls += group.length;
    await Promise.all(group.map(judge));
    for (const call of group) await probe(call);
    if (maker.shared.length > 200) await maker.shared.truncate(0);
  }

  findings.assertNone("API misuse");
  assert.is(model.adapter, null);
  const after = (await model.forward(FIXED_IDS)).logits.data;
  assert.ok(sameBits(before, after), "logits for a fixed input changed after the API fuzzing");
  model.dispose();
  foreign.dispose();
});

// ---------------------------------------------------------------------------
// Minimal reproductions of what the API fuzzing found. Each line marked BUG is
// a library bug, reported and not yet fixed in lib/: the test fails until the
// fix lands, and then guards against a regression.
// ---------------------------------------------------------------------------

test("case 4, pinned: misuse found by the fuzzing gets coded errors and leaves sessions usable", async () => {
  const model = await Model.load(api.dir);
  const findings = new Findings();
  const expectCoded = async (what: string, fn: () => unknown) => {
    const out = await settle(fn);
    if (out.kind === "resolved") findings.add(what, "resolved, expected a coded rejection");
    else if (out.kind === "hung") findings.add(what, `did not settle within ${HANG_MS} ms`);
    else {
      const problem = codedProblem(out.error, true);
      if (problem) findings.add(what, problem);
    }
  };
  const nullProto = Object.create(null) as unknown;

  // BUG: forward() reads options.logits before anything validates options (lib/model.ts), so null
  // options, which eval(), complete() and Model.load() accept as {}, throw a TypeError.
  const forwardNull = await settle(() => model.forward([1, 2], null as never));
  if (forwardNull.kind !== "resolved") {
    const problem = forwardNull.kind === "hung" ? "hung" : codedProblem(forwardNull.error, true);
    if (problem) findings.add("model.forward([1, 2], null)", problem);
  }
  // BUG: toTokenArray (lib/session.ts) runs new Int32Array(tokens.length) before checking the
  // length, so a negative, fractional-huge or absurd length throws a RangeError.
  await expectCoded("model.forward({ length: -1 })", () => model.forward({ length: -1 } as never));
  await expectCoded("model.forward({ length: 2 ** 40 })", () => model.forward({ length: 2 ** 40 } as never));
  // BUG: the error messages of toTokenArray and ModelSession.truncate call String(value), which
  // throws a TypeError for an object without a prototype.
  await expectCoded("model.forward([1, Object.create(null)])", () => model.forward([1, nullProto] as never));
  await expectCoded("session.truncate(Object.create(null))", () => model.createSession().truncate(nullProto as never));
  // BUG: evalBatch (lib/session.ts) never checks that each item is an object holding a ModelSession.
  await expectCoded("model.evalBatch([null])", () => model.evalBatch([null] as never));
  await expectCoded("model.evalBatch([{ tokens: [1] }])", () => model.evalBatch([{ tokens: [1] }] as never));
  await expectCoded("model.evalBatch([{ session: {}, tokens: [1] }])", () => model.evalBatch([{ session: {}, tokens: [1] }] as never));
  // BUG: worse, the queues of the items before the bad one have already been acquired when it
  // throws, and are never released: the valid session's next eval() waits forever.
  const s = model.createSession();
  const what = "model.evalBatch([{ session: s, tokens: [1] }, { session: {}, tokens: [1] }])";
  await expectCoded(what, () => model.evalBatch([{ session: s, tokens: [1] }, { session: {}, tokens: [1] }] as never));
  const after = await settle(() => s.eval([1]), PROBE_MS);
  if (after.kind === "hung") findings.add(what, `afterwards s.eval([1]) hangs: the session's queue was left locked`);
  else if (after.kind === "rejected") findings.add(what, `afterwards s.eval([1]) fails: ${errorText(after.error)}`);

  findings.assertNone("pinned misuse");
  model.dispose();
});

test.run();
