// Generation: greedy equals the argmax chain of full forwards, seeds reproduce,
// streaming text equals one final decode, stop strings / EOS / max tokens /
// AbortSignal end it as documented, and bad options are named.
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { DeepGuardError, Model, type GenerateOptions } from "../../lib/index.js";
import { makeTinyCheckpoint, tinySpecs } from "../support/checkpoint.js";
import { expectError } from "../support/expect.js";

let root = "";
let model: Model;
// Untied: logits of order 1, so sampling is genuinely random at temperature ~1.
const spec = { ...tinySpecs()["llama-f32-untied-mha"], tokenizer: true, vocab: 300 };
const prompt = "def read_file(path):\n    ";

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-gen-"));
  model = await Model.load((await makeTinyCheckpoint(join(root, "m"), spec)).dir);
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

async function collect(p: string | number[], options: GenerateOptions) {
  const chunks = [];
  const it = model.generate(p, options);
  for (;;) {
    const r = await it.next();
    if (r.done) return { chunks, result: r.value };
    chunks.push(r.value);
  }
}

test("greedy generation equals the argmax chain of full forward passes", async () => {
  const ids = model.tokenize(prompt);
  const { result } = await collect(ids, { maxTokens: 10, stopOnEos: false });
  const expected: number[] = [];
  const seq = [...ids];
  for (let i = 0; i < 10; i++) {
    const out = await model.forward(seq, { logits: "last" });
    const t = argmax(out.logits.row(0));
    expected.push(t);
    seq.push(t);
  }
  assert.equal(result.tokens, expected);
  assert.is(result.finishReason, "maxTokens");
});

test("streamed text concatenates to the decode of all tokens", async () => {
  const { chunks, result } = await collect(prompt, { maxTokens: 24, temperature: 1.2, seed: 5, stopOnEos: false });
  const streamed = chunks.map((c) => c.text).join("");
  assert.is(streamed, result.text);
  assert.is(result.text, model.detokenize(result.tokens));
  assert.equal(chunks.flatMap((c) => c.tokens), result.tokens);
});

test("a seed reproduces the same sample; another seed gives another", async () => {
  const opts = { maxTokens: 16, temperature: 1.5, topP: 0.95, topK: 50, stopOnEos: false };
  const a = await model.complete(prompt, { ...opts, seed: 1 });
  const b = await model.complete(prompt, { ...opts, seed: 1 });
  const c = await model.complete(prompt, { ...opts, seed: 2 });
  assert.equal(a.tokens, b.tokens);
  assert.is(a.seed, 1);
  assert.not.equal(a.tokens, c.tokens);
  const unseeded = await model.complete(prompt, { ...opts });
  assert.type(unseeded.seed, "number");
  assert.equal((await model.complete(prompt, { ...opts, seed: unseeded.seed })).tokens, unseeded.tokens);
});

test("stop strings end generation before the stop string", async () => {
  const free = await model.complete(prompt, { maxTokens: 30, temperature: 1, seed: 9, stopOnEos: false });
  assert.ok(free.text.length > 6, "needs some text to cut");
  const stop = free.text.slice(3, 6);
  const cut = await model.complete(prompt, { maxTokens: 30, temperature: 1, seed: 9, stopOnEos: false, stopStrings: [stop] });
  assert.is(cut.finishReason, "stopString");
  assert.is(cut.text, free.text.slice(0, free.text.indexOf(stop)));
});

test("the model's eos token ends generation", async () => {
  const first = (await model.complete(prompt, { maxTokens: 1, stopOnEos: false })).tokens[0];
  const dir = join(root, "eos");
  await makeTinyCheckpoint(dir, spec);
  const cfgPath = join(dir, "config.json");
  const cfg = JSON.parse(await readFile(cfgPath, "utf8"));
  cfg.eos_token_id = first;
  await writeFile(cfgPath, JSON.stringify(cfg));
  const eosModel = await Model.load(dir);
  const r = await eosModel.complete(prompt, { maxTokens: 5 });
  assert.is(r.finishReason, "eos");
  assert.equal(r.tokens, []);
  const r2 = await eosModel.complete(prompt, { maxTokens: 5, stopOnEos: false });
  assert.is(r2.tokens.length, 5);
});

test("generation_config.json's eos ids stop generation too; a bad one is named", async () => {
  const first = (await model.complete(prompt, { maxTokens: 1, stopOnEos: false })).tokens[0];
  const dir = join(root, "gen-eos");
  await makeTinyCheckpoint(dir, spec);
  await writeFile(join(dir, "generation_config.json"), JSON.stringify({ eos_token_id: [first, 3], do_sample: false }));
  const m = await Model.load(dir);
  assert.ok(m.eosTokenIds.includes(first) && m.eosTokenIds.includes(3));
  const r = await m.complete(prompt, { maxTokens: 5 });
  assert.is(r.finishReason, "eos");
  await writeFile(join(dir, "generation_config.json"), JSON.stringify({ eos_token_id: "x" }));
  await expectError(() => Model.load(dir), "ERR_CONFIG", /generation_config\.json: field "eos_token_id"/);
});

test("AbortSignal stops a running generation with ERR_ABORTED, the reason as cause", async () => {
  const ac = new AbortController();
  let seen = 0;
  const reason = new Error("user left");
  try {
    for await (const _ of model.generate(prompt, { maxTokens: 50, stopOnEos: false, signal: ac.signal })) {
      if (++seen === 2) ac.abort(reason);
    }
    assert.unreachable("generation was not aborted");
  } catch (err) {
    assert.instance(err, DeepGuardError);
    assert.is((err as DeepGuardError).code, "ERR_ABORTED");
    assert.is((err as DeepGuardError).cause, reason);
  }
  assert.is(seen, 2);
  await expectError(() => model.complete(prompt, { signal: AbortSignal.abort() }), "ERR_ABORTED", /aborted/);
  assert.is(model.servingStats.active, 0);
});

const badOptions: [string, Record<string, unknown>, RegExp][] = [
  ["topP 0", { topP: 0 }, /"topP"/],
  ["negative temperature", { temperature: -1 }, /"temperature"/],
  ["zero maxTokens", { maxTokens: 0 }, /"maxTokens"/],
  ["fractional topK", { topK: 1.5 }, /"topK"/],
  ["negative seed", { seed: -3 }, /"seed"/],
  ["empty stop string", { stopStrings: [""] }, /"stopStrings\.0"/],
  ["a misspelt option", { maxToken: 5 }, /maxToken/],
  ["a signal that is not an AbortSignal", { signal: {} }, /"signal"/],
];
for (const [name, options, message] of badOptions) {
  test(`rejects ${name}`, async () => {
    await expectError(() => model.complete(prompt, options as GenerateOptions), "ERR_ARGUMENT", message);
  });
}

test("concurrent generations on one model equal sequential ones", async () => {
  const opts = (seed: number) => ({ maxTokens: 12, temperature: 0.8, seed, stopOnEos: false });
  const seq = [];
  for (let s = 0; s < 3; s++) seq.push(await model.complete(prompt, opts(s)));
  const par = await Promise.all([0, 1, 2].map((s) => model.complete(prompt, opts(s))));
  for (let s = 0; s < 3; s++) assert.equal(par[s].tokens, seq[s].tokens);
});

test.run();
