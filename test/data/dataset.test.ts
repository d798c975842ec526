import { test } from "uvu";
import * as assert from "uvu/assert";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Dataset, Model, type SvenPair } from "../../lib/index.js";
import { makeTinyCheckpoint, tinySpecs } from "../support/checkpoint.js";
import { expectError } from "../support/expect.js";

const SVEN = join(process.cwd(), "..", "shared", "datasets", "sven");
let root = "";
let model: Model;
/** The byte-level vocabulary string of each id, read from tokenizer.json (independent of the code under test). */
let vocabById: Map<number, string>;

/** A valid SVEN record whose char_changes are derived from `before`/`after` and the changed substrings. */
function record(over: Record<string, unknown> = {}): Record<string, unknown> {
  const before = "def f(x):\n    return run(x)\n";
  const after = "def f(x):\n    return run(quote(x))\n";
  return {
    func_name: "f",
    func_src_before: before,
    func_src_after: after,
    vul_type: "cwe-078",
    line_changes: {
      deleted: [{ line_no: 2, char_start: 10, char_end: 28, line: "    return run(x)\n" }],
      added: [{ line_no: 2, char_start: 10, char_end: 35, line: "    return run(quote(x))\n" }],
    },
    char_changes: {
      deleted: [],
      added: [
        { char_start: 25, char_end: 31, chars: "quote(" },
        { char_start: 32, char_end: 33, chars: ")" },
      ],
    },
    commit_link: "github.com/x/y/commit/0",
    file_name: "a/b.py",
    ...over,
  };
}

async function writeJsonl(name: string, lines: (string | Record<string, unknown>)[]): Promise<string> {
  const path = join(root, name);
  await writeFile(path, lines.map((l) => (typeof l === "string" ? l : JSON.stringify(l))).join("\n") + "\n");
  return path;
}

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-data-"));
  const ckpt = await makeTinyCheckpoint(join(root, "model"), { ...tinySpecs()["qwen2-f32-gqa-tied"], maxPositions: 4096 });
  model = await Model.load(ckpt.dir);
  const json = JSON.parse(await readFile(join(ckpt.dir, "tokenizer.json"), "utf8")) as { model: { vocab: Record<string, number> } };
  vocabById = new Map(Object.entries(json.model.vocab).map(([tok, id]) => [id, tok]));
});

test.after(async () => {
  model?.dispose();
  await rm(root, { recursive: true, force: true });
});

test("reads the SVEN val folder: every CWE file, pairs in file order, masks on both sides", async () => {
  const ds = await Dataset.fromSven(join(SVEN, "val"));
  assert.is(ds.size, 83);
  assert.equal(ds.invalid, []);
  assert.equal(Object.keys(ds.cweCounts), ["cwe-022", "cwe-078", "cwe-079", "cwe-089", "cwe-125", "cwe-190", "cwe-416", "cwe-476", "cwe-787"]);
  const pairs = await ds.pairs(model);
  assert.is(pairs.length, 83);
  assert.is(pairs[0].id, "cwe-022.jsonl:1");
  assert.is(new Set(pairs.map((p) => p.id)).size, 83);
  assert.ok(pairs.filter((p) => p.cwe === "cwe-089").every((p) => p.language === "py"));
  assert.ok(pairs.filter((p) => p.cwe === "cwe-476").every((p) => p.language === "c"));
  for (const p of pairs) {
    for (const side of [p.vulnerable, p.secure]) {
      assert.equal(Array.from(side.ids), model.tokenize(side.text, { addSpecialTokens: false }));
      assert.is(side.changed.length, side.ids.length);
    }
    // A fix changes something: at least one side has a changed token.
    assert.ok(p.vulnerable.changed.some((v) => v === 1) || p.secure.changed.some((v) => v === 1), p.id);
  }
  assert.is(await ds.pairs(model), pairs, "cached per model");
});

test("a single file; the CWE filter accepts any spelling; limit keeps the first records", async () => {
  const file = join(SVEN, "val", "cwe-089.jsonl");
  const ds = await Dataset.fromSven(file);
  assert.is(ds.size, 20);
  const both = await Dataset.fromSven(join(SVEN, "val"), { cwes: ["CWE-89", "079"] });
  assert.equal(both.cweCounts, { "cwe-079": 5, "cwe-089": 20 });
  const few = await Dataset.fromSven(join(SVEN, "val"), { cwes: ["cwe-089"], limit: 3 });
  assert.equal((await few.pairs(model)).map((p) => p.id), ["cwe-089.jsonl:1", "cwe-089.jsonl:2", "cwe-089.jsonl:3"]);
  await expectError(() => Dataset.fromSven(join(SVEN, "val"), { cwes: ["cwe-999"] }), "ERR_DATASET_EMPTY", /cwe-999/);
  await expectError(() => Dataset.fromSven(join(SVEN, "val"), { cwes: ["sql"] }), "ERR_ARGUMENT", /cwes\.0/);
});

test("maxTokens drops long pairs at pairs() time and counts them", async () => {
  const ds = await Dataset.fromSven(join(SVEN, "val"), { maxTokens: 400 });
  const pairs = await ds.pairs(model);
  const dropped = await ds.dropped(model);
  assert.ok(dropped.tooLong > 0 && pairs.length > 0);
  assert.is(pairs.length + dropped.tooLong, 83);
  assert.ok(pairs.every((p) => p.vulnerable.ids.length <= 400 && p.secure.ids.length <= 400));
  const none = await Dataset.fromSven(join(SVEN, "val"), { maxTokens: 1 });
  await expectError(() => none.pairs(model), "ERR_DATASET_EMPTY", /maxTokens 1/);
});

test("a bad line names file, line and field; skip mode lists and counts it", async () => {
  const good = record();
  const path = await writeJsonl("mixed.jsonl", [
    good,
    "",
    "{not json",
    record({ func_src_after: 42 }),
    record({ vul_type: "sql" }),
    (() => {
      const r = record();
      delete r.commit_link;
      return r;
    })(),
    record({ char_changes: { deleted: [], added: [{ char_start: 25, char_end: 31, chars: "QUOTE(" }] } }),
    record({ char_changes: { deleted: [{ char_start: 5, char_end: 900, chars: "x" }], added: [] } }),
    good,
  ]);
  await expectError(() => Dataset.fromSven(path), "ERR_DATASET", /mixed\.jsonl:3: field "\(line\)": not valid JSON/);
  const ds = await Dataset.fromSven(path, { onInvalid: "skip" });
  assert.is(ds.size, 2);
  assert.equal(
    ds.invalid.map((i) => [i.line, i.field]),
    [
      [3, "(line)"],
      [4, "func_src_after"],
      [5, "vul_type"],
      [6, "commit_link"],
      [7, "char_changes.added.0.chars"],
      [8, "char_changes.deleted.0.char_end"],
    ],
  );
  assert.ok(ds.invalid.every((i) => i.file === path && i.message.length > 0));
  assert.is(ds.invalid[3].message, "missing required field");
  assert.equal((await ds.pairs(model)).map((p) => p.id), ["mixed.jsonl:1", "mixed.jsonl:9"]);
  // The first bad line in a throwing load is the one named.
  const only = await writeJsonl("one-bad.jsonl", [good, record({ vul_type: 89 })]);
  await expectError(() => Dataset.fromSven(only), "ERR_DATASET", /one-bad\.jsonl:2: field "vul_type"/);
});

test("empty datasets and unreadable paths are coded errors", async () => {
  const empty = await writeJsonl("empty.jsonl", []);
  await expectError(() => Dataset.fromSven(empty), "ERR_DATASET_EMPTY");
  const allBad = await writeJsonl("all-bad.jsonl", ["[]", "{}"]);
  await expectError(() => Dataset.fromSven(allBad, { onInvalid: "skip" }), "ERR_DATASET_EMPTY", /2 invalid lines/);
  const emptyDir = join(root, "no-jsonl");
  await mkdir(emptyDir);
  await writeFile(join(emptyDir, "notes.txt"), "hi");
  await expectError(() => Dataset.fromSven(emptyDir), "ERR_DATASET_EMPTY", /no \.jsonl files/);
  await expectError(() => Dataset.fromSven(join(root, "missing.jsonl")), "ERR_DATASET", /missing\.jsonl/);
  await expectError(() => Dataset.fromSven(""), "ERR_ARGUMENT");
  await expectError(() => Dataset.fromSven(allBad, { onInvalid: "ignore" } as never), "ERR_ARGUMENT", /onInvalid/);
  await expectError(() => Dataset.fromSven(allBad, { maxTokens: 0 }), "ERR_ARGUMENT", /maxTokens/);
  await expectError(() => Dataset.fromSven(allBad, { colour: 1 } as never), "ERR_ARGUMENT");
});

test("seeded shuffling and batching: same (seed, epoch) same batches, a new epoch a new order", async () => {
  const ds = await Dataset.fromSven(join(SVEN, "val"));
  const ids = (b: SvenPair[][]) => b.map((batch) => batch.map((p) => p.id));
  const a = ids(await ds.batches(model, { batchSize: 8, seed: 7 }));
  const again = ids(await ds.batches(model, { batchSize: 8, seed: 7, epoch: 0 }));
  assert.equal(a, again);
  assert.is(a.length, 11);
  assert.equal(a.map((b) => b.length), [8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 3]);
  assert.equal(a.flat().sort(), (await ds.pairs(model)).map((p) => p.id).sort(), "a permutation of all pairs");
  const epoch1 = ids(await ds.batches(model, { batchSize: 8, seed: 7, epoch: 1 }));
  const seed8 = ids(await ds.batches(model, { batchSize: 8, seed: 8 }));
  assert.not.equal(epoch1, a);
  assert.not.equal(seed8, a);
  assert.equal(ids(await ds.batches(model, { batchSize: 8, seed: 7, epoch: 1 })), epoch1);
  const ordered = ids(await ds.batches(model, { batchSize: 40, seed: 7, shuffle: false, dropLast: true }));
  assert.equal(ordered.flat(), (await ds.pairs(model)).slice(0, 80).map((p) => p.id));
  await expectError(() => ds.batches(model, { batchSize: 0, seed: 1 }), "ERR_ARGUMENT", /batchSize/);
  await expectError(() => ds.batches(model, { batchSize: 2, seed: 1.5 }), "ERR_ARGUMENT", /seed/);
  await expectError(() => ds.batches(model, { batchSize: 2 } as never), "ERR_ARGUMENT", /seed/);
});

/** Per-token masks rebuilt independently: decode each token alone (exact for ASCII text under byte-level BPE). */
function asciiMask(ids: Int32Array, ranges: [number, number][]): number[] {
  let pos = 0;
  return Array.from(ids, (id) => {
    const piece = model.detokenize([id]);
    const start = pos;
    pos += piece.length;
    return ranges.some(([s, e]) => start < e && pos > s) ? 1 : 0;
  });
}

test("changed masks on hand-made ASCII pairs", async () => {
  const path = await writeJsonl("ascii.jsonl", [record()]);
  const [pair] = await (await Dataset.fromSven(path)).pairs(model);
  assert.equal(Array.from(pair.vulnerable.changed), new Array(pair.vulnerable.ids.length).fill(0), "nothing deleted");
  const expected = asciiMask(pair.secure.ids, [
    [25, 31],
    [32, 33],
  ]);
  assert.equal(Array.from(pair.secure.changed), expected);
  // The marked tokens spell out exactly the changed text plus what shares their tokens.
  const marked = Array.from(pair.secure.ids).filter((_, i) => pair.secure.changed[i]);
  const text = model.detokenize(marked);
  assert.ok(text.includes("quote(") && text.includes(")") && !text.includes("return"), text);
});

test("changed masks on non-ASCII text: offsets are code points; split characters mark every token they touch", async () => {
  // "é" is two UTF-8 bytes that the tiny tokenizer (learned on ASCII code) keeps as two byte tokens.
  // "😀" is one code point but two UTF-16 units: the change after it is given in code points, as Python counts.
  const before = "s = 'caf\u00e9'\nt = '\u{1F600}' + x\n";
  const after = "s = 'cafe'\nt = '\u{1F600}' + y\n";
  const cp = (text: string, sub: string) => Array.from(text.slice(0, text.indexOf(sub))).length;
  const r = record({
    func_src_before: before,
    func_src_after: after,
    char_changes: {
      deleted: [
        { char_start: cp(before, "\u00e9"), char_end: cp(before, "\u00e9") + 1, chars: "\u00e9" },
        { char_start: cp(before, "x\n"), char_end: cp(before, "x\n") + 1, chars: "x" },
      ],
      added: [
        { char_start: cp(after, "e'"), char_end: cp(after, "e'") + 1, chars: "e" },
        { char_start: cp(after, "y\n"), char_end: cp(after, "y\n") + 1, chars: "y" },
      ],
    },
  });
  assert.is(cp(before, "x\n"), before.indexOf("x\n") - 1, "the emoji makes code points and UTF-16 units differ");
  const path = await writeJsonl("unicode.jsonl", [r]);
  const [pair] = await (await Dataset.fromSven(path)).pairs(model);
  const tokenizer = model.tokenizer!;
  const ids = Array.from(pair.vulnerable.ids);
  // Which tokens hold the bytes of "é" (0xC3 0xA9), found through the vocabulary, independently of the code under test.
  const eBytes = ids.flatMap((id, i) => (/[\u00c3\u00a9]/.test(vocabById.get(id) ?? "") ? [i] : []));
  assert.ok(eBytes.length >= 1, "found the tokens of é");
  const xToken = ids.findIndex((id, i) => i > eBytes[eBytes.length - 1] && tokenizer.decode([id]).includes("x"));
  const expected = ids.map((_, i) => (eBytes.includes(i) || i === xToken ? 1 : 0));
  assert.equal(Array.from(pair.vulnerable.changed), expected);
  const afterIds = Array.from(pair.secure.ids);
  const marked = afterIds.filter((_, i) => pair.secure.changed[i]).map((id) => tokenizer.decode([id]));
  assert.ok(marked.some((t) => t.includes("e")) && marked.some((t) => t.includes("y")), marked.join("|"));
  assert.ok(!marked.some((t) => t.includes("\uFFFD")), "no emoji byte token is marked");
});

test("ids that cannot reproduce the text (an NFC normalizer on decomposed text): ERR_TOKENIZER, or dropped in skip mode", async () => {
  const dir = join(root, "nfc-model");
  await mkdir(dir);
  for (const f of ["config.json", "model.safetensors", "tokenizer_config.json"]) await copyFile(join(model.info.directory, f), join(dir, f));
  const json = JSON.parse(await readFile(join(model.info.directory, "tokenizer.json"), "utf8")) as Record<string, unknown>;
  await writeFile(join(dir, "tokenizer.json"), JSON.stringify({ ...json, normalizer: { type: "NFC" } }));
  const nfc = await Model.load(dir);
  const decomposed = "s = 'cafe\u0301'\n"; // "é" as e + combining acute: NFC composes it, so the ids spell other bytes
  const r = record({
    func_src_before: decomposed,
    func_src_after: "s = 'cafe'\n",
    char_changes: { deleted: [{ char_start: 9, char_end: 10, chars: "\u0301" }], added: [] },
  });
  const path = await writeJsonl("nfc.jsonl", [record(), r]);
  await expectError(async () => (await Dataset.fromSven(path)).pairs(nfc), "ERR_TOKENIZER", /nfc\.jsonl:2: field "func_src_before"/);
  const skipping = await Dataset.fromSven(path, { onInvalid: "skip" });
  assert.equal((await skipping.pairs(nfc)).map((p) => p.id), ["nfc.jsonl:1"]);
  assert.equal(await skipping.dropped(nfc), { tooLong: 0, unaligned: 1 });
  nfc.dispose();
});

test("pairs() needs a model with a tokenizer", async () => {
  const ds = await Dataset.fromSven(join(SVEN, "val", "cwe-079.jsonl"));
  await expectError(() => ds.pairs(null as never), "ERR_ARGUMENT");
  const noTok = await makeTinyCheckpoint(join(root, "no-tok"), { ...tinySpecs()["qwen2-bf16-tied"] });
  const bare = await Model.load(noTok.dir);
  await expectError(() => ds.pairs(bare), "ERR_NO_TOKENIZER");
  bare.dispose();
});

test.run();
