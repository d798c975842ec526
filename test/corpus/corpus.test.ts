// Corpus building (dedup, leakage exclusion, deterministic split) and packing
// (rows of seqLen + 1 overlapping by one, eos between documents), with bad inputs.
import { test } from "uvu";
import * as assert from "uvu/assert";
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildCorpus, OverlapIndex, readExclusionTexts } from "../../lib/corpus/build.js";
import { packCorpus, readPacked } from "../../lib/corpus/pack.js";
import { writeSafetensors } from "../../lib/io/safetensors.js";
import { Tokenizer } from "../../lib/model/tokenizer.js";
import { trainTokenizer } from "../../lib/tokenizer/train.js";
import { CLI_PATH } from "../support/cli.js";
import { expectError } from "../support/expect.js";
import { CORPUS } from "../support/tokenizer-fixture.js";

const cli = CLI_PATH;
let dir = "";
test.before.each(async () => {
  dir = await mkdtemp(join(tmpdir(), "dg-corpus-"));
});
test.after.each(async () => {
  await rm(dir, { recursive: true, force: true });
});

const LEAKED = `def get_user(conn, user_id):
    query = "SELECT * FROM users WHERE id = " + user_id
    cursor = conn.cursor()
    cursor.execute(query)
    return cursor.fetchone()
`;

async function makeSources(): Promise<string> {
  const src = join(dir, "src");
  await mkdir(join(src, "pkg", "deep"), { recursive: true });
  for (let i = 0; i < 40; i++) await writeFile(join(src, "pkg", `m${i}.py`), `def f${i}(x):\n    return x * ${i} + ${i * i}\n`);
  await writeFile(join(src, "pkg", "dup.py"), "def f0(x):\n    return x * 0 + 0\n"); // same as m0.py
  await writeFile(join(src, "pkg", "dup-ws.py"), "def f1(x):\n\n        return x * 1 + 1   \n"); // m1.py up to whitespace
  await writeFile(join(src, "pkg", "deep", "leak.py"), `import os\n\n# helpers\n${LEAKED}\nprint("hi")\n`);
  await writeFile(join(src, "pkg", "includes.c"), "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\nint main(void) { return 0; }\n");
  await writeFile(join(src, "pkg", "notes.txt"), "not source");
  await writeFile(join(src, "pkg", "big.py"), "x = 1\n".repeat(300));
  return src;
}

test("buildCorpus: dedups, excludes leaked evaluation texts (not boilerplate), splits deterministically", async () => {
  const src = await makeSources();
  const sven = join(dir, "sven.jsonl");
  await writeFile(sven, JSON.stringify({ func_src_before: LEAKED, func_src_after: LEAKED.replace("+ user_id", ", (user_id,)") }) + "\n");
  await writeFile(join(dir, "ctx.c"), "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n");
  const exclude = await readExclusionTexts([sven, join(dir, "ctx.c")]);
  assert.is(exclude.length, 3);
  const options = { sources: [{ name: "pkg", dir: src, license: "MIT" }], exclude, heldoutFraction: 0.25, maxFileBytes: 1000 };
  const m = await buildCorpus({ ...options, out: join(dir, "a") });
  assert.equal(m.files, { seen: 45, kept: 41, duplicates: 2, excludedOverlap: 1, skippedLarge: 1, skippedBinary: 0 });
  assert.is(m.train.files + m.heldout.files, 41);
  assert.ok(m.heldout.files > 0 && m.train.files > m.heldout.files);
  const train = (await readFile(join(dir, "a", "train.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l));
  assert.ok(train.every((d) => d.source === "pkg" && typeof d.text === "string" && !d.path.startsWith("/")));
  assert.not.ok(train.some((d) => d.path.includes("leak")));
  assert.ok([...train].some((d) => d.path === "pkg/includes.c") || (await readFile(join(dir, "a", "heldout.jsonl"), "utf8")).includes("includes.c"));
  const again = await buildCorpus({ ...options, out: join(dir, "b") });
  assert.equal(again, m);
  assert.is(await readFile(join(dir, "b", "heldout.jsonl"), "utf8"), await readFile(join(dir, "a", "heldout.jsonl"), "utf8"));
  assert.equal(JSON.parse(await readFile(join(dir, "a", "manifest.json"), "utf8")), m);
});

test("OverlapIndex: a file holding most of an excluded function matches; a few shared lines do not", () => {
  const idx = new OverlapIndex([LEAKED], 0.5);
  assert.is(idx.match(`x = 1\n${LEAKED}`), 0);
  assert.is(idx.match("    cursor = conn.cursor()\n    return cursor.fetchone()\n"), -1);
  assert.is(new OverlapIndex(["import os\nimport sys\n"], 0.5).match("import os\nimport sys\n"), -1);
});

test("packCorpus: rows overlap by one token, documents end with eos; readPacked round-trips", async () => {
  await writeFile(join(dir, "c.py"), CORPUS);
  await trainTokenizer({ corpus: [join(dir, "c.py")], out: join(dir, "tok"), vocabSize: 400, minFrequency: 1 });
  const tokenizer = (await Tokenizer.fromDirectory(join(dir, "tok")))!;
  const docs = ["def a():\n    return 1\n", "int main(void) { return 0; }\n", CORPUS];
  await writeFile(join(dir, "docs.jsonl"), docs.map((text) => JSON.stringify({ text, source: "x" }) + "\n").join(""));
  const out = join(dir, "packed.safetensors");
  const r = await packCorpus({ corpus: join(dir, "docs.jsonl"), tokenizer, vocabSize: tokenizer.vocabSize, seqLen: 16, out });
  const eos = tokenizer.eosTokenId!;
  const stream = docs.flatMap((d) => [...tokenizer.encode(d, { addSpecialTokens: false }), eos]);
  assert.is(r.streamTokens, stream.length);
  assert.is(r.rows, Math.floor((stream.length - 1) / 16));
  assert.is(r.dtype, "U16");
  const back = await readPacked(out);
  assert.equal([back.rows, back.seqLen, back.vocabSize], [r.rows, 16, 400]);
  for (let row = 0; row < r.rows; row++) {
    assert.equal(Array.from(back.tokens.subarray(row * 17, row * 17 + 17)), stream.slice(row * 16, row * 16 + 17));
  }
});

test("bad inputs: coded errors naming what is wrong", async () => {
  await expectError(() => buildCorpus({ sources: [], out: dir }), "ERR_ARGUMENT", /sources/);
  await expectError(() => buildCorpus({ sources: [{ name: "x", dir: join(dir, "nope"), license: "MIT" }], out: dir }), "ERR_ARGUMENT", /not a directory/);
  await mkdir(join(dir, "empty"));
  await expectError(() => buildCorpus({ sources: [{ name: "x", dir: join(dir, "empty"), license: "MIT" }], out: join(dir, "o") }), "ERR_ARGUMENT", /no \.py\/\.c\/\.h files were kept/);
  await writeFile(join(dir, "bad.jsonl"), '{"text": 1}\n');
  await expectError(() => readExclusionTexts([join(dir, "nope")]), "ERR_ARGUMENT", /cannot be read/);
  await writeFile(join(dir, "broken.jsonl"), "{oops\n");
  await expectError(() => readExclusionTexts([join(dir, "broken.jsonl")]), "ERR_ARGUMENT", /broken\.jsonl:1: not valid JSON/);
  await writeFile(join(dir, "c.py"), CORPUS);
  await trainTokenizer({ corpus: [join(dir, "c.py")], out: join(dir, "tok"), vocabSize: 300, minFrequency: 1 });
  const tokenizer = (await Tokenizer.fromDirectory(join(dir, "tok")))!;
  const base = { tokenizer, vocabSize: 300, seqLen: 8, out: join(dir, "p.safetensors") };
  await expectError(() => packCorpus({ ...base, corpus: join(dir, "bad.jsonl") }), "ERR_ARGUMENT", /bad\.jsonl:1: field "text" must be a string/);
  await expectError(() => packCorpus({ ...base, corpus: join(dir, "nope.jsonl") }), "ERR_ARGUMENT", /cannot read corpus/);
  await writeFile(join(dir, "short.jsonl"), '{"text": "a"}\n');
  await expectError(() => packCorpus({ ...base, corpus: join(dir, "short.jsonl") }), "ERR_ARGUMENT", /do not fill one row/);
  await expectError(() => packCorpus({ ...base, corpus: join(dir, "short.jsonl"), seqLen: 0 }), "ERR_ARGUMENT", /seqLen/);
  const fake = join(dir, "fake.safetensors");
  await writeSafetensors(fake, { tokens: { dtype: "U16", shape: [1, 3], data: new Uint8Array(6) } });
  await expectError(() => readPacked(fake), "ERR_ARGUMENT", /not a packed corpus/);
  const wild = join(dir, "wild.safetensors");
  await writeSafetensors(wild, { tokens: { dtype: "U16", shape: [1, 3], data: new Uint8Array([0, 0, 255, 255, 1, 0]) } }, { format: "deepguard-packed-v1", seq_len: "2", vocab_size: "300" });
  await expectError(() => readPacked(wild), "ERR_TOKEN_ID", /65535 at position 1/);
  assert.not.ok((await readdir(dir)).includes("p.safetensors"));
});

test("CLI: corpus build and pack", async () => {
  const src = await makeSources();
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, "corpus", ...args], { encoding: "utf8" });
  const built = run("build", "--source", `pkg=${src}:MIT`, "--out", join(dir, "c"), "--heldout", "0.1", "--json");
  assert.is(built.status, 0, built.stderr);
  assert.is(JSON.parse(built.stdout).sources[0].license, "MIT");
  await writeFile(join(dir, "c.py"), CORPUS);
  await trainTokenizer({ corpus: [join(dir, "c.py")], out: join(dir, "tok"), vocabSize: 300, minFrequency: 1 });
  const packed = run("pack", "--corpus", join(dir, "c", "train.jsonl"), "--tokenizer", join(dir, "tok"), "--seq-len", "8", "--out", join(dir, "t.safetensors"), "--json");
  assert.is(packed.status, 0, packed.stderr);
  assert.ok(JSON.parse(packed.stdout).rows > 10);
  const bad = run("build", "--source", "no-license-here", "--out", dir);
  assert.is(bad.status, 2);
  assert.match(bad.stderr, /--source must be NAME=DIR:LICENSE/);
  assert.is(run("pack", "--corpus", "x", "--tokenizer", "y", "--seq-len", "-3", "--out", "z").status, 2);
  assert.is(run("frobnicate").status, 2);
});

test.run();
