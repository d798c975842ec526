// Guided generation (lib/generate/guided.ts) on a tiny random checkpoint:
// strength 0 is plain generation, a guard whose statistics favour a token
// raises its frequency, captured re-scoring equals a fresh full forward, n
// batched samples equal n separate runs, cancellation, bad inputs.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Generator, Guard, Model, type ModelSession } from "../../lib/index.js";
import { makeTinyCheckpoint, tinySpecs } from "../support/checkpoint.js";
import { expectError } from "../support/expect.js";

let root = "";
let model: Model, other: Model;
let guard: Guard;
const spec = { ...tinySpecs()["llama-f32-untied-mha"], vocab: 300, maxPositions: 256 };

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-guided-"));
  model = await Model.load((await makeTinyCheckpoint(join(root, "m"), spec)).dir, { prefillChunk: 8 });
  other = await Model.load((await makeTinyCheckpoint(join(root, "o"), { ...spec, layers: 3 })).dir);
  guard = Guard.create(model, { layers: [-2, -1], aggregation: "attention", seed: 5 });
  for (let i = 0; i < spec.vocab; i++) guard.tokenStats[i] = Math.sin(i * 1.7) * 0.3;
});
test.after(async () => {
  model?.dispose();
  other?.dispose();
  await rm(root, { recursive: true, force: true });
});

const promptOf = (n: number, salt: number) => Array.from({ length: n }, (_, i) => (i * 37 + salt * 101 + 11) % spec.vocab);
const sampling = (seed: number, maxTokens = 20) => ({ maxTokens, temperature: 1, topP: 0.95, seed, stopOnEos: false });

test("strength 0 gives exactly the tokens of model.generate with the same seed", async () => {
  for (const interval of [1, 3, Infinity]) {
    const gen = new Generator(model, guard, { interval, strength: 0 });
    for (const [len, seed] of [[5, 1], [13, 2]]) {
      const p = promptOf(len, seed);
      const plain = await model.complete(p, sampling(seed));
      const r = await gen.complete(p, sampling(seed));
      assert.equal(r.samples[0].tokens, plain.tokens, `interval ${interval} prompt ${len}`);
      assert.is(r.samples[0].text, plain.text);
    }
  }
});

test("a guard whose statistics favour one token raises its frequency", async () => {
  const favoured = 42;
  const g = Guard.create(model, { layers: [-1], aggregation: "mean", seed: 2 });
  g.tokenStats.fill(-0.5);
  g.tokenStats[favoured] = 1;
  const count = async (strength: number) => {
    const gen = new Generator(model, g, { interval: 4, strength });
    let hits = 0;
    for (let seed = 0; seed < 4; seed++) {
      const r = await gen.complete(promptOf(6, seed), sampling(seed, 30));
      hits += r.samples[0].tokens.filter((t) => t === favoured).length;
    }
    return hits;
  };
  const plain = await count(0);
  const guided = await count(4);
  assert.ok(guided > plain + 10, `favoured token: ${plain} plain vs ${guided} guided`);
});

test("re-scoring from captured states equals scoring a fresh full forward (within 1e-4)", async () => {
  const p = promptOf(11, 3);
  const captured = await new Generator(model, guard, { interval: 4, strength: 0 }).complete(p, sampling(4, 18));
  const reforward = await new Generator(model, guard, { interval: 4, strength: 0, rescore: "reforward" }).complete(p, sampling(4, 18));
  const a = captured.samples[0], b = reforward.samples[0];
  assert.equal(a.tokens, b.tokens);
  assert.is(a.scores.length, 1 + Math.floor(17 / 4), "the prompt, then every 4 tokens");
  assert.is(a.scores.length, b.scores.length);
  a.scores.forEach((s, i) => assert.ok(Math.abs(s - b.scores[i]) < 1e-4, `interval ${i}: ${s} vs ${b.scores[i]}`));
  // The final score covers the prompt and every generated token but the last.
  const fresh = await guard.score([...p, ...a.tokens.slice(0, -1)]);
  assert.ok(Math.abs(a.score - fresh.sequence) < 1e-4, `${a.score} vs ${fresh.sequence}`);
  // Guided (strength > 0) too.
  const guided = await new Generator(model, guard, { interval: 3, strength: 1.5 }).complete(p, sampling(9, 15));
  const g = guided.samples[0];
  const fresh2 = await guard.score([...p, ...g.tokens.slice(0, -1)]);
  assert.ok(Math.abs(g.score - fresh2.sequence) < 1e-4);
});

test("n batched samples equal n separate runs with the same seeds; their re-scores are batched", async () => {
  const gen = new Generator(model, guard, { interval: 2, strength: 1 });
  for (const len of [3, 14]) {
    const p = promptOf(len, 7);
    const batched = await gen.complete(p, { ...sampling(30, 12), n: 3 });
    assert.is(batched.samples.length, 3);
    for (let i = 0; i < 3; i++) {
      const alone = await gen.complete(p, { ...sampling(30 + i, 12), n: 1 });
      assert.equal(batched.samples[i].tokens, alone.samples[0].tokens, `prompt ${len} sample ${i}`);
      assert.is(batched.samples[i].seed, 30 + i);
      assert.is(batched.samples[i].scores.length, alone.samples[0].scores.length);
      batched.samples[i].scores.forEach((s, j) => assert.ok(Math.abs(s - alone.samples[0].scores[j]) < 1e-5, `score ${j}`));
    }
    assert.ok(batched.timings.rescoreCalls < batched.timings.rescores, `${batched.timings.rescoreCalls} calls for ${batched.timings.rescores} re-scores`);
  }
});

test("streaming: pieces carry the latest score; a cancelled stream stops within one step and frees its sessions", async () => {
  const sessions: ModelSession[] = [];
  const create = model.createSession.bind(model);
  model.createSession = () => {
    const s = create();
    sessions.push(s);
    return s;
  };
  try {
    const gen = new Generator(model, guard, { interval: 2, strength: 1 });
    let text = "";
    let last = NaN;
    const it = gen.stream(promptOf(9, 1), sampling(3, 10));
    let r = await it.next();
    while (!r.done) {
      text += r.value.text;
      last = r.value.score;
      assert.ok(r.value.score > 0 && r.value.score < 1);
      r = await it.next();
    }
    assert.is(r.value.samples[0].text, text);
    assert.is(last, r.value.samples[0].scores.at(-1));

    const ac = new AbortController();
    let got = 0;
    await expectError(async () => {
      for await (const piece of gen.stream(promptOf(9, 2), { ...sampling(3, 200), signal: ac.signal })) {
        got += piece.tokens.length;
        if (got === 3) ac.abort();
      }
    }, "ERR_ABORTED");
    assert.is(got, 3);
    // A consumer that breaks out early.
    for await (const piece of gen.stream(promptOf(9, 3), sampling(3, 200))) if (piece.tokens.length) break;
    await expectError(() => gen.complete(promptOf(5, 1), { ...sampling(1), signal: AbortSignal.abort() }), "ERR_ABORTED");
    await new Promise((r) => setTimeout(r, 20));
    assert.is(model.servingStats.active, 0);
    assert.ok(sessions.length >= 3);
    for (const s of sessions) await expectError(() => s.eval([1]), "ERR_DISPOSED");
  } finally {
    model.createSession = create;
  }
});

test("candidate mode: c continuations per interval, the most secure kept; KV caches follow the choice", async () => {
  const p = promptOf(10, 4);
  let changed = 0;
  for (const seed of [1, 2, 3]) {
    const gen = new Generator(model, guard, { interval: 4, strength: 1, candidates: 3 });
    const r = await gen.complete(p, { ...sampling(seed, 14), n: 2 });
    for (const s of r.samples) {
      assert.is(s.tokens.length, 14);
      assert.equal(s.candidates?.intervals, 4);
      assert.ok(s.candidates!.changed <= 4);
      changed += s.candidates!.changed;
      assert.is(s.scores.length, 4);
      // The kept continuation's hidden states are those of a fresh forward over the chosen tokens.
      const fresh = await guard.score([...p, ...s.tokens.slice(0, -1)]);
      assert.ok(Math.abs(s.score - fresh.sequence) < 1e-4, `${s.score} vs ${fresh.sequence}`);
      assert.is(s.text, model.detokenize(s.tokens));
    }
    // The same seed gives the same samples.
    const again = await gen.complete(p, { ...sampling(seed, 14), n: 2 });
    assert.equal(again.samples.map((x) => x.tokens), r.samples.map((x) => x.tokens));
  }
  assert.ok(changed > 0, "the most secure candidate was sometimes not the first");
  // An abort between or during rounds: ERR_ABORTED, nothing left running.
  const ac = new AbortController();
  const gen = new Generator(model, guard, { interval: 2, strength: 1, candidates: 2 });
  let got = 0;
  await expectError(async () => {
    for await (const piece of gen.stream(p, { ...sampling(1, 100), signal: ac.signal })) {
      got += piece.tokens.length;
      if (got >= 3) ac.abort();
    }
  }, "ERR_ABORTED");
  assert.ok(got >= 3 && got <= 4, `${got} tokens`);
  assert.is(model.servingStats.active, 0);
});

test("bad inputs are coded errors", async () => {
  for (const interval of [0, -1, 2.5, NaN, "4"]) {
    await expectError(() => new Generator(model, guard, { interval: interval as number }), "ERR_ARGUMENT", /interval/);
  }
  for (const strength of [-0.1, Infinity, NaN]) {
    await expectError(() => new Generator(model, guard, { strength }), "ERR_ARGUMENT", /strength/);
  }
  await expectError(() => new Generator(model, guard, { bogus: 1 } as never), "ERR_ARGUMENT");
  await expectError(() => new Generator(model, guard, { candidates: 2, interval: Infinity }), "ERR_ARGUMENT", /finite interval/);
  await expectError(() => new Generator(other, guard), "ERR_GUARD_MISMATCH", /layer count/);
  const gen = new Generator(model, guard);
  await expectError(() => gen.complete(promptOf(256, 1), { maxTokens: 1 }), "ERR_CONTEXT_LENGTH");
  await expectError(() => gen.complete(promptOf(200, 1), { maxTokens: 100 }), "ERR_CONTEXT_LENGTH");
  await expectError(() => gen.complete(promptOf(5, 1), { n: 0 }), "ERR_ARGUMENT", /"n"/);
  await expectError(() => gen.complete([], {}), "ERR_ARGUMENT", /empty/);
  await expectError(() => gen.complete([1, 999], {}), "ERR_TOKEN_ID");
  await expectError(async () => {
    for await (const _ of gen.stream(promptOf(5, 1), { n: 2 } as never)) void _;
  }, "ERR_ARGUMENT");
  assert.is(model.servingStats.active, 0);
});

test.run();
