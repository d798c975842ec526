// The BPE trainer against the naive reference learner, its files against the
// engine's tokenizer (@huggingface/tokenizers), byte round trips, the CLI and bad inputs.
import { test } from "uvu";
import * as assert from "uvu/assert";
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Tokenizer } from "../../lib/model/tokenizer.js";
import { Random } from "../../lib/random.js";
import { trainBpe, WordCounter } from "../../lib/tokenizer/bpe-trainer.js";
import { byteSymbols, SPLIT_REGEX } from "../../lib/tokenizer/byte-level.js";
import { trainTokenizer } from "../../lib/tokenizer/train.js";
import { CLI_PATH } from "../support/cli.js";
import { expectError } from "../support/expect.js";
import { CORPUS, naiveBpe } from "../support/tokenizer-fixture.js";

const cli = CLI_PATH;
let dir = "";
test.before.each(async () => {
  dir = await mkdtemp(join(tmpdir(), "dg-tokenizer-"));
});
test.after.each(async () => {
  await rm(dir, { recursive: true, force: true });
});

test("the incremental trainer learns exactly the naive learner's tokens and merges", () => {
  for (const size of [257, 300, 420]) {
    const counter = new WordCounter();
    counter.add(CORPUS);
    const fast = trainBpe(counter.counts, { vocabSize: size, minFrequency: 1 });
    const slow = naiveBpe(CORPUS, size);
    assert.equal(fast.merges, slow.merges, `merges at ${size}`);
    assert.equal(fast.tokens, slow.tokens, `tokens at ${size}`);
  }
});

test("minFrequency stops training when no pair is frequent enough", () => {
  const counter = new WordCounter();
  counter.add("abab abab xyz");
  const r = trainBpe(counter.counts, { vocabSize: 1000, minFrequency: 2 });
  assert.ok(r.stoppedEarly);
  assert.ok(r.tokens.length < 1000 && r.tokens.includes("ab"));
  assert.not.ok(r.tokens.includes("xy"));
});

/** Reference BPE encoding: split, bytes to symbols, apply the lowest-rank merge until none applies. */
function referenceEncode(text: string, vocab: Record<string, number>, merges: string[]): number[] {
  const rank = new Map(merges.map((m, i) => [m, i]));
  const symbols = byteSymbols();
  const ids: number[] = [];
  for (const word of text.match(SPLIT_REGEX) ?? []) {
    let parts = Array.from(new TextEncoder().encode(word), (b) => symbols[b]);
    for (;;) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < parts.length; i++) {
        const r = rank.get(`${parts[i]} ${parts[i + 1]}`);
        if (r !== undefined && r < bestRank) [best, bestRank] = [i, r];
      }
      if (best < 0) break;
      const [l, r] = [parts[best], parts[best + 1]];
      const next: string[] = [];
      for (let i = 0; i < parts.length; i++) {
        if (i + 1 < parts.length && parts[i] === l && parts[i + 1] === r) next.push(parts[i++] + r);
        else next.push(parts[i]);
      }
      parts = next;
    }
    ids.push(...parts.map((p) => vocab[p]));
  }
  return ids;
}

function randomText(r: Random, n: number): string {
  const pool = ["a", "Z", "_", " ", "  ", "\n", "\r\n", "\t", "(", "'s", "0", "9", "é", "ß", "中", "文", "😀", "\u0000", "\u007f", "\u00a0", "\u2028", "💥", "<|", "|>", "def ", "int "];
  let s = "";
  for (let i = 0; i < n; i++) s += pool[Math.floor(r.nextDouble() * pool.length)];
  return s;
}

test("written files load in the engine's tokenizer: same ids as a reference encoder, bytes round-trip, specials", async () => {
  const corpus = join(dir, "corpus");
  await mkdir(join(corpus, "sub"), { recursive: true });
  await writeFile(join(corpus, "a.py"), CORPUS);
  await writeFile(join(corpus, "sub", "b.c"), CORPUS.replace(/def /g, "static "));
  await writeFile(join(corpus, "blob.bin"), Buffer.from([1, 0, 2, 0]));
  const out = join(dir, "tok");
  const result = await trainTokenizer({ corpus: [corpus], vocabSize: 600, out, minFrequency: 1 });
  assert.is(result.vocabSize, 600);
  assert.is(result.files, 3);
  const textBytes = Buffer.byteLength(CORPUS) + Buffer.byteLength(CORPUS.replace(/def /g, "static "));
  assert.is(result.bytes, textBytes, "the binary file is skipped");
  assert.equal((await readdir(out)).sort(), ["tokenizer.json", "tokenizer_config.json"]);
  const tok = (await Tokenizer.fromDirectory(out))!;
  const json = JSON.parse(await import("node:fs/promises").then((fs) => fs.readFile(join(out, "tokenizer.json"), "utf8")));
  const r = new Random(11);
  for (let k = 0; k < 40; k++) {
    const text = k === 0 ? CORPUS : randomText(r, 1 + Math.floor(r.nextDouble() * 60));
    const ids = tok.encode(text, { addSpecialTokens: false });
    assert.equal(ids, referenceEncode(text, json.model.vocab, json.model.merges), `ids for ${JSON.stringify(text)}`);
    assert.is(tok.decode(ids), text);
  }
  assert.equal(tok.encode("x<|endoftext|>", { addSpecialTokens: false }).slice(-1), [598]);
  assert.equal(tok.encode("<|pad|>", { addSpecialTokens: false }), [599]);
  assert.is(tok.eosTokenId, 598);
});

test("the CLI trains a tokenizer and reports; bad flags are usage errors", async () => {
  await writeFile(join(dir, "c.py"), CORPUS);
  const out = join(dir, "cli-tok");
  const ok = spawnSync(process.execPath, [cli, "tokenizer", "train", "--corpus", join(dir, "c.py"), "--vocab", "300", "--out", out, "--json"], { encoding: "utf8" });
  assert.is(ok.status, 0, ok.stderr);
  const summary = JSON.parse(ok.stdout);
  assert.is(summary.vocabSize, 300);
  assert.is(summary.files, 1);
  const bad = spawnSync(process.execPath, [cli, "tokenizer", "train", "--corpus", join(dir, "c.py"), "--vocab", "lots", "--out", out], { encoding: "utf8" });
  assert.is(bad.status, 2);
  assert.match(bad.stderr, /--vocab must be a non-negative integer/);
  const missing = spawnSync(process.execPath, [cli, "tokenizer", "train", "--out", out], { encoding: "utf8" });
  assert.is(missing.status, 2);
  assert.match(missing.stderr, /--corpus and --out are required/);
});

test("bad inputs are coded errors and write nothing", async () => {
  const out = join(dir, "never");
  await expectError(() => trainTokenizer({ corpus: [join(dir, "absent")], out }), "ERR_ARGUMENT", /absent cannot be read/);
  await mkdir(join(dir, "empty"));
  await expectError(() => trainTokenizer({ corpus: [join(dir, "empty")], out }), "ERR_ARGUMENT", /no corpus files/);
  await writeFile(join(dir, "empty", "x.py"), "");
  await expectError(() => trainTokenizer({ corpus: [join(dir, "empty")], out }), "ERR_ARGUMENT", /no text/);
  await expectError(() => trainTokenizer({ corpus: [dir], out, vocabSize: 100 }), "ERR_ARGUMENT", /vocabSize/);
  await expectError(() => trainTokenizer({ corpus: [dir], out, vocabSize: 258, specialTokens: ["<a>", "<b>", "<c>"] }), "ERR_ARGUMENT", /room for the 256 byte tokens/);
  await expectError(() => trainTokenizer({ corpus: [dir], out, specialTokens: ["<a>", "<a>"] }), "ERR_ARGUMENT", /distinct/);
  await expectError(() => trainTokenizer({ corpus: [dir], out, extensions: ["py"] }), "ERR_ARGUMENT", /extensions/);
  await expectError(() => trainTokenizer({ corpus: [], out }), "ERR_ARGUMENT", /corpus/);
  const ac = new AbortController();
  ac.abort();
  await writeFile(join(dir, "empty", "x.py"), "abc");
  await expectError(() => trainTokenizer({ corpus: [dir], out, signal: ac.signal }), "ERR_ABORTED");
  assert.equal((await readdir(dir)).includes("never"), false);
});

test.run();
