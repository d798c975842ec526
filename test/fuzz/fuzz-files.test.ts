// Fuzzing of the files a model is loaded from: corrupted model.safetensors
// (case 1), config.json (case 2) and adapters (case 3). Each must load and run
// or fail with a coded error, never crash or hang, and leave the model's logits
// bit-identical. Shared helpers and the promise itself: support/fuzz.ts.
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Model } from "../../lib/index.js";
import { makeTinyAdapter } from "../support/adapter.js";
import { makeTinyCheckpoint, type TinyCheckpoint } from "../support/checkpoint.js";
import {
  FIXED_IDS,
  Findings,
  HANG_MS,
  Rng,
  SCALE,
  SEED,
  caseDir,
  codedProblem,
  fileSpec,
  loadAndRun,
  sameBits,
  settle,
  show,
  trace,
} from "../support/fuzz.js";

let root = "";
let small: TinyCheckpoint;
let smallBytes: Buffer;

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-fuzz-files-"));
  small = await makeTinyCheckpoint(join(root, "small"), fileSpec);
  smallBytes = await readFile(join(small.dir, "model.safetensors"));
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

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
    const dir = await caseDir(root, small.dir, ["config.json"]);
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
    const dir = await caseDir(root, small.dir, ["model.safetensors"]);
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
// used to pass every shape check and crash the engine. It runs in a child
// process, so a crash is reported as a finding instead of killing this suite.
// ---------------------------------------------------------------------------

const LIB_URL = new URL("../../lib/index.js", import.meta.url).href;

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
  // Regression: Model.load resolved and forward() segfaulted; sizes and head widths are now
  // capped at 2^31 - 1 (lib/config.ts, native ModelConfig::check()), so it fails as ERR_CONFIG.
  const heads = 4783906658119697;
  const what = `config num_attention_heads = num_key_value_heads = ${heads}, head_dim = 3856 (product 2^64 + 16)`;
  const dir = await caseDir(root, mha.dir, ["model.safetensors"]);
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
    const dir = await caseDir(root, adapterDir, ADAPTER_FILES);
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

test.run();
