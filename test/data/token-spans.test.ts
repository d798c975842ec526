import { test } from "uvu";
import * as assert from "uvu/assert";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { byteLevelSpans, decodedSpans, tokenSpans, type SpanSource } from "../../lib/model/token-offsets.js";
import { makeTokenizerFiles } from "../support/tokenizer-fixture.js";

const files = makeTokenizerFiles(400);
const hf = new HfTokenizer(files.tokenizerJson, files.tokenizerConfig);
const added = hf.get_added_tokens_decoder();
const byteLevel: SpanSource = {
  idToToken: (id) => hf.id_to_token(id),
  addedTokenContent: (id) => added.get(id)?.content,
  decode: (ids) => (ids.length ? hf.decode(ids) : ""),
};
const encode = (text: string) => hf.encode(text, { add_special_tokens: false }).ids;

const TEXTS = [
  "def add(a, b):\n    return a + b\n",
  "unicode: naïve café 日本語 😀 ✓\n",
  "x<|endoftext|>y",
  "\t\r\n  \n",
];

test("byte-level spans tile the text and cover each token's decoded text", () => {
  for (const text of TEXTS) {
    const ids = encode(text);
    const spans = byteLevelSpans(byteLevel, text, ids)!;
    assert.ok(spans, JSON.stringify(text));
    assert.is(spans.start[0], 0);
    assert.is(spans.end[ids.length - 1], text.length);
    for (let i = 0; i < ids.length; i++) {
      assert.ok(spans.start[i] <= spans.end[i]);
      if (i > 0) assert.ok(spans.start[i] >= spans.start[i - 1] && spans.start[i] <= spans.end[i - 1]);
      const piece = hf.decode([ids[i]]);
      // A whole-character token decodes to exactly its span; a partial one to U+FFFD.
      if (!piece.includes("\uFFFD")) assert.is(text.slice(spans.start[i], spans.end[i]), piece);
    }
  }
});

test("the decoding fallback agrees with the byte-level spans", () => {
  const sources = TEXTS.concat(["ab😀😀cd", "é"]);
  for (const text of sources) {
    const ids = encode(text);
    assert.equal(decodedSpans(byteLevel, text, ids), byteLevelSpans(byteLevel, text, ids), JSON.stringify(text));
  }
});

test("ids that do not reproduce the text give null", () => {
  const ids = encode("hello world");
  assert.is(byteLevelSpans(byteLevel, "hello world!", ids), null);
  assert.is(decodedSpans(byteLevel, "hello  world", ids), null);
  assert.is(tokenSpans(byteLevel, "hello", ids), null);
  assert.equal(tokenSpans(byteLevel, "", []), { start: new Int32Array(0), end: new Int32Array(0) });
});

test("a SentencePiece-style tokenizer (▁ for spaces, leading space dropped) goes through decoding", () => {
  // Vocabulary: "▁int", "▁x", "=", "▁1", ";", "<0xC3>", "<0xA9>" (byte fallback for é).
  const vocab = ["▁int", "▁x", "=", "▁1", ";", "<0xC3>", "<0xA9>", "▁caf"];
  const bytesOf = (t: string) => (/^<0x[0-9A-F]{2}>$/.test(t) ? [parseInt(t.slice(3, 5), 16)] : [...new TextEncoder().encode(t.replace(/▁/g, " "))]);
  const sp: SpanSource = {
    idToToken: (id) => vocab[id],
    addedTokenContent: () => undefined,
    decode: (ids) => {
      const text = new TextDecoder().decode(new Uint8Array(ids.flatMap((id) => bytesOf(vocab[id]))));
      return text.startsWith(" ") ? text.slice(1) : text;
    },
  };
  const text = "int x= 1; café";
  const ids = [0, 1, 2, 3, 4, 7, 5, 6];
  const spans = tokenSpans(sp, text, ids)!;
  assert.ok(spans);
  const pieces = ids.map((_, i) => text.slice(spans.start[i], spans.end[i]));
  assert.equal(pieces, ["int", " x", "=", " 1", ";", " caf", "é", "é"]);
});

test("the tiny checkpoint tokenizer file is byte-level (the fast path is what the dataset uses)", async () => {
  // Guards the assumption above: the fixture writes a ByteLevel decoder, as Qwen2 / DeepSeek-Coder do.
  assert.is((files.tokenizerJson as { decoder: { type: string } }).decoder.type, "ByteLevel");
  const sven = await readFile(join(process.cwd(), "..", "shared", "datasets", "sven", "val", "cwe-125.jsonl"), "utf8");
  const src = (JSON.parse(sven.split("\n")[0]) as { func_src_before: string }).func_src_before;
  assert.ok(byteLevelSpans(byteLevel, src, encode(src)));
});

test.run();
