// The native forward pass against an independent float64 reference, for every
// tiny checkpoint shape (both architectures, F32/F16/BF16, GQA, rope scaling,
// tied/untied, attention bias, sharded), plus KV-cache and batching invariants.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Model } from "../../lib/index.js";
import { makeTinyCheckpoint, tinySpecs, type TinySpec } from "../support/checkpoint.js";
import { flatten, randomIds, relativeError } from "../support/compare.js";
import { expectError } from "../support/expect.js";
import { bf16Agreement, bf16Problems } from "../support/bf16.js";
import { referenceForward } from "../support/reference.js";

const TOLERANCE = 1e-4;
let root = "";

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-model-"));
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

// An F32 KV cache, pinned: these tests check agreement with the float64 reference
// of exact K/V (BF16 checkpoints default to a BF16 cache, which kv-cache.test.ts
// checks against a reference of BF16-rounded K/V).
async function load(name: string, spec: TinySpec) {
  const ckpt = await makeTinyCheckpoint(join(root, name), spec);
  return { ckpt, model: await Model.load(ckpt.dir, { kvCacheDtype: "float32" }) };
}

for (const [name, spec] of Object.entries(tinySpecs())) {
  test(`forward matches the float64 reference: ${name}`, async () => {
    const { ckpt, model } = await load(name, spec);
    const ids = randomIds(13, spec.vocab, spec.seed);
    // The default activations ("auto") round BF16 matrices' inputs where AMX
    // runs them: then the engine is checked against the reference that rounds
    // them too, over many short sequences (test/support/bf16.ts says why).
    if (spec.dtype === "BF16" && model.info.activations === "bfloat16") {
      const agreement = await bf16Agreement(model, ckpt, spec.seed);
      assert.equal(bf16Problems(agreement), [], JSON.stringify(agreement));
      const out = await model.forward(ids, { hiddenStates: "all" });
      assert.is(out.logits.rows, ids.length);
      assert.is(out.hiddenStates.size, spec.layers + 1);
      return;
    }
    const ref = referenceForward(ckpt.config, ckpt.weights, ids);
    const tol = TOLERANCE;
    const out = await model.forward(ids, { hiddenStates: "all" });

    assert.is(out.logits.rows, ids.length);
    const logitErr = relativeError(out.logits.data, flatten(ref.logits));
    assert.ok(logitErr <= tol, `logits relative error ${logitErr}`);
    assert.is(out.hiddenStates.size, spec.layers + 1);
    for (let l = 0; l <= spec.layers; l++) {
      const err = relativeError(out.hiddenStates.get(l)!.data, flatten(ref.hiddenStates[l]));
      assert.ok(err <= tol, `hidden state ${l} relative error ${err}`);
    }
  });
}

test("a prompt longer than one native pass (512 rows) still matches the reference", async () => {
  const spec = { ...tinySpecs()["qwen2-f32-gqa-tied"], maxPositions: 4096 };
  const { ckpt, model } = await load("long", spec);
  const ids = randomIds(700, spec.vocab, 7);
  const ref = referenceForward(ckpt.config, ckpt.weights, ids);
  const out = await model.forward(ids, { hiddenStates: [-1] });
  assert.ok(relativeError(out.logits.data, flatten(ref.logits)) <= TOLERANCE);
  assert.ok(relativeError(out.hiddenStates.get(spec.layers)!.data, flatten(ref.hiddenStates[spec.layers])) <= TOLERANCE);
});

test("KV-cached decoding equals full recomputation, hidden states included", async () => {
  const spec = tinySpecs()["llama-bf16-gqa-rope-linear"];
  const { model } = await load("kv", spec);
  const ids = randomIds(20, spec.vocab, 3);
  const full = await model.forward(ids, { hiddenStates: "all" });
  const session = model.createSession();
  const chunks = [ids.slice(0, 8), ids.slice(8, 11), ...ids.slice(11).map((t) => [t])];
  let row = 0;
  for (const chunk of chunks) {
    const step = await session.eval(chunk, { logits: "all", hiddenStates: "all" });
    for (let j = 0; j < chunk.length; j++, row++) {
      const err = relativeError(step.logits.row(j), full.logits.row(row));
      assert.ok(err <= 1e-5, `logits of token ${row}: ${err}`);
      for (let l = 0; l <= spec.layers; l++) {
        const herr = relativeError(step.hiddenStates.get(l)!.row(j), full.hiddenStates.get(l)!.row(row));
        assert.ok(herr <= 1e-5, `hidden ${l} of token ${row}: ${herr}`);
      }
    }
  }
  assert.is(session.length, ids.length);
});

test("truncate rewinds a session so a shared prompt can be re-used", async () => {
  const spec = tinySpecs()["qwen2-f32-gqa-tied"];
  const { model } = await load("truncate", spec);
  const session = model.createSession();
  await session.eval([1, 2, 3, 4]);
  const a = await session.eval([5]);
  await session.truncate(4);
  assert.is(session.length, 4);
  const b = await session.eval([5]);
  assert.equal(Array.from(b.logits.data), Array.from(a.logits.data));
  await expectError(() => session.truncate(99), "ERR_ARGUMENT", /truncate\(99\)/);
});

test("dispose frees the KV cache; a disposed session refuses work", async () => {
  const spec = tinySpecs()["qwen2-f32-gqa-tied"];
  const { model } = await load("dispose", spec);
  const session = model.createSession();
  await session.eval([1, 2, 3]);
  assert.ok(session.cacheBytes > 0);
  session.dispose();
  assert.is(session.cacheBytes, 0);
  await expectError(() => session.eval([4]), "ERR_DISPOSED", /disposed/);
  await expectError(() => model.evalBatch([{ session, tokens: [4] }]), "ERR_DISPOSED");
  session.dispose(); // idempotent
});

test("a disposed model refuses work; its sessions' steps in flight still finish", async () => {
  const spec = tinySpecs()["llama-f32-untied-mha"];
  const { model } = await load("dispose-model", spec);
  const session = model.createSession();
  const inFlight = session.eval(randomIds(40, spec.vocab, 1));
  await new Promise((r) => setImmediate(r)); // the step is now queued in native code
  model.dispose();
  assert.is((await inFlight).logits.rows, 1);
  await expectError(() => model.forward([1, 2]), "ERR_DISPOSED", /model has been disposed/);
  await expectError(() => model.createSession(), "ERR_DISPOSED");
  await expectError(() => model.unloadAdapter(), "ERR_DISPOSED");
  model.dispose(); // idempotent
});

test("a sharded checkpoint equals the unsharded one bit for bit", async () => {
  const spec = tinySpecs()["llama-f32-untied-mha"];
  const one = await load("unsharded", { ...spec, shards: undefined });
  const three = await load("sharded", { ...spec, shards: 3 });
  const ids = randomIds(9, spec.vocab, 11);
  const a = await one.model.forward(ids, { hiddenStates: "all" });
  const b = await three.model.forward(ids, { hiddenStates: "all" });
  assert.equal(Array.from(b.logits.data), Array.from(a.logits.data));
  for (let l = 0; l <= spec.layers; l++) {
    assert.equal(Array.from(b.hiddenStates.get(l)!.data), Array.from(a.hiddenStates.get(l)!.data));
  }
});

test("weights read into memory (mmap: false) give the same results as mapped ones", async () => {
  const spec = tinySpecs()["qwen2-bf16-tied"];
  const { ckpt, model } = await load("read", spec);
  const inMemory = await Model.load(ckpt.dir, { mmap: false, kvCacheDtype: "float32" }); // as load() pins it
  const ids = randomIds(10, spec.vocab, 8);
  const a = await model.forward(ids, { hiddenStates: "all" });
  const b = await inMemory.forward(ids, { hiddenStates: "all" });
  assert.equal(Array.from(b.logits.data), Array.from(a.logits.data));
  assert.is(inMemory.info.parameterCount, model.info.parameterCount);
  await expectError(() => Model.load(ckpt.dir, { mmap: "no" as unknown as boolean }), "ERR_ARGUMENT", /option "mmap"/);
  await expectError(() => Model.load(ckpt.dir, { mmapp: false } as never), "ERR_ARGUMENT", /mmapp/);
  await expectError(() => model.forward([1], { logits: "first" as never }), "ERR_ARGUMENT", /eval option "logits"/);
  await expectError(() => model.evalBatch(null as never), "ERR_ARGUMENT", /at least one session/);
});

test("one batched decode step equals separate steps per sequence", async () => {
  const spec = tinySpecs()["qwen2-bf16-tied"];
  const { model } = await load("batch", spec);
  const prompts = [randomIds(5, spec.vocab, 1), randomIds(9, spec.vocab, 2), randomIds(2, spec.vocab, 3)];
  const next = [7, 8, 9];
  const solo = [];
  for (let i = 0; i < 3; i++) {
    const s = model.createSession();
    await s.eval(prompts[i]);
    solo.push(await s.eval([next[i]], { hiddenStates: [-2, -1] }));
  }
  const sessions = prompts.map(() => model.createSession());
  await Promise.all(sessions.map((s, i) => s.eval(prompts[i])));
  const batched = await model.evalBatch(
    sessions.map((session, i) => ({ session, tokens: [next[i]] })),
    { hiddenStates: [-2, -1] },
  );
  for (let i = 0; i < 3; i++) {
    assert.ok(relativeError(batched[i].logits.data, solo[i].logits.data) <= 1e-5, `logits of sequence ${i}`);
    assert.equal([...batched[i].hiddenStates.keys()], [spec.layers - 1, spec.layers]);
    for (const l of [spec.layers - 1, spec.layers]) {
      assert.ok(relativeError(batched[i].hiddenStates.get(l)!.data, solo[i].hiddenStates.get(l)!.data) <= 1e-5);
    }
  }
});

test("hidden-state selection returns exactly the chosen layers and nothing else", async () => {
  const spec = tinySpecs()["qwen2-f32-gqa-tied"];
  const { model } = await load("select", spec);
  const out = await model.forward([1, 2, 3], { hiddenStates: [0, -1], logits: "none" });
  assert.equal([...out.hiddenStates.keys()], [0, spec.layers]);
  assert.is(out.logits.rows, 0);
  const none = await model.forward([1, 2, 3]);
  assert.is(none.hiddenStates.size, 0);
  assert.is(none.logits.rows, 3);
  for (const bad of [[spec.layers + 1], [-(spec.layers + 2)], [0.5]]) {
    await expectError(() => model.forward([1], { hiddenStates: bad }), "ERR_ARGUMENT", /hiddenStates index/);
  }
});

test("token ids out of range are rejected with the offending position", async () => {
  const spec = tinySpecs()["qwen2-f32-gqa-tied"];
  const { model } = await load("ids", spec);
  await expectError(() => model.forward([1, spec.vocab]), "ERR_TOKEN_ID", new RegExp(`tokens\\[1\\] = ${spec.vocab} `));
  for (const ids of [[-1], [1.5], [Number.NaN]]) {
    await expectError(() => model.forward(ids), "ERR_TOKEN_ID", /tokens\[0\]/);
  }
  await expectError(() => model.forward([]), "ERR_ARGUMENT", /tokens is empty/);
  // The model is still usable afterwards.
  assert.is((await model.forward([1, 2])).logits.rows, 2);
});

test("concurrent sessions on one model give the same results as sequential ones", async () => {
  const spec = tinySpecs()["llama-f32-untied-mha"];
  const { model } = await load("concurrent", spec);
  const prompts = [0, 1, 2, 3].map((i) => randomIds(6 + i, spec.vocab, 40 + i));
  const sequential = [];
  for (const p of prompts) sequential.push(await model.forward(p));
  const parallel = await Promise.all(prompts.map((p) => model.forward(p)));
  for (let i = 0; i < prompts.length; i++) {
    assert.equal(Array.from(parallel[i].logits.data), Array.from(sequential[i].logits.data));
  }
});

test.run();
