import { test } from "uvu";
import * as assert from "uvu/assert";
import { Tokenizer } from "@huggingface/tokenizers";
import { EOS_TOKEN, makeTokenizerFiles } from "../support/tokenizer-fixture.js";

const CODE_SAMPLES = [
  "def add(a, b):\n    return a + b\n",
  'char buf[16];\nsnprintf(buf, sizeof(buf), "%s", name);\n',
  "  leading spaces,\ttabs\r\nand CRLF\n\n\n",
  "unicode: naïve café 日本語 😀 ✓",
  "x=1;y=2;print(x<<y>>1)",
];

function load(vocabSize: number): { tokenizer: Tokenizer; vocabSize: number } {
  const files = makeTokenizerFiles(vocabSize);
  return { tokenizer: new Tokenizer(files.tokenizerJson, files.tokenizerConfig), vocabSize: files.vocabSize };
}

test("vocabulary has the requested size with the special token last", () => {
  for (const size of [257, 300, 512]) {
    const { tokenizer, vocabSize } = load(size);
    assert.is(vocabSize, size);
    assert.is(tokenizer.get_vocab(true).size, size);
    assert.is(tokenizer.token_to_id(EOS_TOKEN), size - 1);
    assert.is(tokenizer.token_to_id("!"), 0, "GPT-2 byte order: printable bytes first");
    assert.is(tokenizer.token_to_id("Ġ"), 220, "GPT-2 byte order: space maps to Ġ at id 220");
  }
});

test("encode then decode round-trips code text", () => {
  const { tokenizer, vocabSize } = load(512);
  for (const text of CODE_SAMPLES) {
    const { ids } = tokenizer.encode(text);
    assert.ok(ids.every((id: number) => Number.isInteger(id) && id >= 0 && id < vocabSize));
    assert.is(tokenizer.decode(ids), text, JSON.stringify(text));
  }
});

test("merges compress code and no BOS is added", () => {
  const text = "def get_user(conn, user_id):\n    return cursor.fetchone()\n";
  const { tokenizer } = load(512);
  const { ids } = tokenizer.encode(text);
  assert.ok(ids.length < new TextEncoder().encode(text).length / 2, `${ids.length} tokens`);
  assert.is.not(ids[0], tokenizer.token_to_id(EOS_TOKEN));
  assert.ok(tokenizer.tokenize("    return").includes("ĠĠĠ"), "indentation is merged");
});

test("the special token is recognised in text and can be skipped when decoding", () => {
  const { tokenizer, vocabSize } = load(300);
  const { ids } = tokenizer.encode(`int x;${EOS_TOKEN}`);
  assert.is(ids[ids.length - 1], vocabSize - 1);
  assert.is(tokenizer.decode(ids), `int x;${EOS_TOKEN}`);
  assert.is(tokenizer.decode(ids, { skip_special_tokens: true }), "int x;");
});

test("building is deterministic", () => {
  assert.equal(makeTokenizerFiles(400), makeTokenizerFiles(400));
});

test("sizes the corpus cannot fill, or below 257, are refused", () => {
  assert.throws(() => makeTokenizerFiles(256), /257/);
  assert.throws(() => makeTokenizerFiles(100_000), /at most/);
});

test.run();
