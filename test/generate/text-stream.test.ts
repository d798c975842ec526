// Incremental detokenization with a SentencePiece-style (Llama) decoder, which
// strips the first space of a sequence: streamed text must keep the space
// before the first generated word and never split a UTF-8 character.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { TextStream } from "../../lib/generate/generate.js";
import { Tokenizer } from "../../lib/model/tokenizer.js";

let root = "";
let tokenizer: Tokenizer;

// "▁def" "▁f" "():" "▁return" "▁x", plus byte-fallback tokens for "é" (C3 A9).
const vocab: Record<string, number> = { "<unk>": 0, "▁def": 1, "▁f": 2, "():": 3, "▁return": 4, "▁x": 5, "<0xC3>": 6, "<0xA9>": 7 };

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-stream-"));
  const json = {
    version: "1.0",
    added_tokens: [{ id: 0, content: "<unk>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: null,
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "▁" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: { type: "BPE", unk_token: "<unk>", byte_fallback: true, fuse_unk: true, vocab, merges: [] },
  };
  await writeFile(join(root, "tokenizer.json"), JSON.stringify(json));
  await writeFile(join(root, "tokenizer_config.json"), JSON.stringify({ tokenizer_class: "LlamaTokenizerFast" }));
  tokenizer = (await Tokenizer.fromDirectory(root))!;
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

test("the decoder strips a sequence's first space (the behaviour being guarded against)", () => {
  assert.is(tokenizer.decode([4]), "return");
  assert.is(tokenizer.decode([1, 4]), "def return");
});

test("with prompt context, the first generated word keeps its space", () => {
  const stream = new TextStream(tokenizer, [1, 2, 3]); // "def f():"
  const pieces = [4, 5].map((t) => stream.push(t));
  assert.equal(pieces, [" return", " x"]);
});

test("a character split across byte-fallback tokens is emitted whole", () => {
  const stream = new TextStream(tokenizer, [1]);
  assert.is(stream.push(6), ""); // first byte of "é": held back
  assert.is(stream.push(7), "é");
  assert.is(stream.push(5), " x");
});

test("flush returns what is still held back at the end", () => {
  const stream = new TextStream(tokenizer, [1]);
  assert.is(stream.push(6), "");
  assert.is(stream.flush(), "\uFFFD"); // an incomplete character at the very end
});

test.run();
