// The Guard API on tiny random checkpoints: scoring (one forward, batched ==
// one by one), training on a slice of SVEN, guard files (round trip, identity
// checks, corrupt folders) and bad inputs.
import { test } from "uvu";
import * as assert from "uvu/assert";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Dataset, Guard, Model } from "../../lib/index.js";
import { writeSafetensors } from "../../lib/io/safetensors.js";
import { makeTinyCheckpoint, tinySpecs } from "../support/checkpoint.js";
import { expectError } from "../support/expect.js";

const SVEN = join(process.cwd(), "..", "shared", "datasets", "sven");
let root = "";
let model: Model, sameShape: Model, otherShape: Model;

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-guard-"));
  const spec = { ...tinySpecs()["qwen2-f32-gqa-tied"], maxPositions: 4096 };
  model = await Model.load((await makeTinyCheckpoint(join(root, "model"), spec)).dir);
  sameShape = await Model.load((await makeTinyCheckpoint(join(root, "same-shape"), { ...spec, seed: 99 })).dir);
  otherShape = await Model.load((await makeTinyCheckpoint(join(root, "other"), { ...spec, hidden: 32, heads: 2, kvHeads: 1 })).dir);
});

test.after(async () => {
  for (const m of [model, sameShape, otherShape]) m?.dispose();
  await rm(root, { recursive: true, force: true });
});

const ids = (n: number, seed: number) => Int32Array.from({ length: n }, (_, i) => (i * 37 + seed * 11) % 320);

test("score runs one forward; scoreHidden on the captured states gives the same; batched equals one by one", async () => {
  const guard = Guard.create(model, { layers: [-2, -1], aggregation: "attention", seed: 3 });
  assert.equal(guard.layers, [1, 2]);
  const seqs = [ids(7, 1), ids(1, 2), ids(12, 3)];
  const items = [];
  for (const s of seqs) {
    const out = await model.forward(s, { logits: "none", hiddenStates: [1, 2] });
    items.push({ ids: s, hidden: [out.hiddenStates.get(1)!.data, out.hiddenStates.get(2)!.data] });
  }
  const batched = await guard.scoreHidden(items);
  for (let i = 0; i < seqs.length; i++) {
    const [alone] = await guard.scoreHidden([items[i]]);
    const viaScore = await guard.score(seqs[i]);
    assert.is(alone.tokens.length, seqs[i].length);
    for (let t = 0; t < seqs[i].length; t++) {
      assert.ok(Math.abs(alone.tokens[t] - batched[i].tokens[t]) < 1e-6, `seq ${i} token ${t}`);
      assert.ok(Math.abs(viaScore.tokens[t] - batched[i].tokens[t]) < 1e-6);
      assert.ok(alone.tokens[t] > 0 && alone.tokens[t] < 1);
    }
    const mean = Array.from(alone.tokens).reduce((a, b) => a + b, 0) / alone.tokens.length;
    assert.ok(Math.abs(alone.sequence - mean) < 1e-12);
  }
});

test("scorer(): a frozen copy with the same scores for every aggregation (attention folded)", async () => {
  const s = ids(10, 7);
  for (const aggregation of ["attention", "mean", "last", "weighted"] as const) {
    const guard = Guard.create(model, { layers: [0, 1, 2], aggregation, seed: 8 });
    const scorer = await guard.scorer();
    const [a, b] = [await guard.score(s), await scorer.score(s)];
    for (let t = 0; t < s.length; t++) assert.ok(Math.abs(a.tokens[t] - b.tokens[t]) < 1e-5, `${aggregation} token ${t}`);
    guard.parameters()["analyzer.fc4.bias"][0] += 5;
    const c = await scorer.score(s);
    assert.equal(Array.from(c.tokens), Array.from(b.tokens), "later parameter changes do not reach the scorer");
    assert.ok((await guard.score(s)).sequence > a.sequence);
  }
});

test("Guard.create: seeded, and bad options are coded errors", async () => {
  const a = Guard.create(model, { layers: [1, 2], aggregation: "weighted", seed: 5 });
  const b = Guard.create(model, { layers: [1, 2], aggregation: "weighted", seed: 5 });
  assert.equal(a.parameters()["analyzer.fc1.weight"], b.parameters()["analyzer.fc1.weight"]);
  assert.equal(Object.keys(a.parameters()).filter((k) => k.startsWith("aggregator")), ["aggregator.layer_logits"]);
  await expectError(() => Guard.create(model, { layers: [3] }), "ERR_ARGUMENT", /guard layer 3 is out of range \[-3, 2\]/);
  await expectError(() => Guard.create(model, { layers: [-4] }), "ERR_ARGUMENT", /out of range/);
  await expectError(() => Guard.create(model, { layers: [1, -2] }), "ERR_ARGUMENT", /repeats hidden state 1/);
  await expectError(() => Guard.create(model, { layers: [] }), "ERR_ARGUMENT", /layers/);
  await expectError(() => Guard.create(model, { layers: [1], aggregation: "max" as never }), "ERR_ARGUMENT", /unknown aggregation "max"/);
  await expectError(() => Guard.create(model, { layers: [1], bogus: 1 } as never), "ERR_ARGUMENT", /bogus/);
  const g = Guard.create(model, { layers: [1, 2], aggregation: "mean" });
  const h = new Float32Array(3 * 64);
  await expectError(() => g.scoreHidden([]), "ERR_ARGUMENT", /non-empty/);
  await expectError(() => g.scoreHidden([{ ids: Int32Array.of(1, 2, 3), hidden: [h] }]), "ERR_ARGUMENT", /2 arrays/);
  await expectError(() => g.scoreHidden([{ ids: Int32Array.of(1, 2), hidden: [h, h] }]), "ERR_ARGUMENT", /2 x 64/);
  await expectError(() => g.scoreHidden([{ ids: Int32Array.of(1, 2, 320), hidden: [h, h] }]), "ERR_TOKEN_ID");
  await expectError(() => g.score([]), "ERR_ARGUMENT", /empty/);
  await expectError(() => g.forwardTrain([{ ids: Int32Array.of(1, 2, 3), hidden: [h, h] }], { train: true, seed: -1 }), "ERR_ARGUMENT", /seed/);
});

test("forwardTrain: backward once, gradients accumulate until zeroGrad, dHidden has the hidden layout", async () => {
  const g = Guard.create(model, { layers: [0, 2], aggregation: "attention", seed: 1 });
  const h = Float32Array.from({ length: 4 * 64 }, (_, i) => Math.sin(i));
  const batch = [{ ids: Int32Array.of(5, 6, 7, 8), hidden: [h, h.map((v) => v * 0.5)] }];
  const f1 = await g.forwardTrain(batch, { train: false, seed: 0 });
  const { dHidden } = await f1.backward([1]);
  assert.is(dHidden.length, 1);
  assert.equal(dHidden[0].map((a) => a.length), [256, 256]);
  const once = g.gradients()["analyzer.fc4.bias"][0];
  assert.ok(once !== 0);
  await expectError(() => f1.backward([1]), "ERR_ARGUMENT", /once/);
  const f2 = await g.forwardTrain(batch, { train: false, seed: 0 });
  await f2.backward([1]);
  assert.ok(Math.abs(g.gradients()["analyzer.fc4.bias"][0] - 2 * once) < 1e-6 * Math.abs(once) + 1e-9);
  g.zeroGrad();
  assert.is(g.gradients()["analyzer.fc4.bias"][0], 0);
  // Concurrent backward passes: each accumulates, none is lost.
  const [p1, p2, p3] = await Promise.all([0, 1, 2].map(() => g.forwardTrain(batch, { train: false, seed: 0 })));
  await Promise.all([p1.backward([1]), p2.backward([1]), p3.backward([1])]);
  assert.ok(Math.abs(g.gradients()["analyzer.fc4.bias"][0] - 3 * once) < 1e-5 * Math.abs(once) + 1e-9);
  g.zeroGrad();
  const f3 = await g.forwardTrain(batch, { train: true, seed: 0 });
  await expectError(() => f3.backward([1, 2]), "ERR_ARGUMENT", /1 finite/);
});

test("updateTokenStats: +0.01 secure, -0.01 vulnerable, clamped to [-1, 1]", () => {
  const g = Guard.create(model, { layers: [2], aggregation: "last" });
  for (let i = 0; i < 150; i++) g.updateTokenStats({ secure: Int32Array.of(3, 4), vulnerable: Int32Array.of(4, 5) });
  assert.is(g.tokenStats[3], 1);
  assert.ok(Math.abs(g.tokenStats[4]) < 1e-6);
  assert.is(g.tokenStats[5], -1);
});

test("fit on a slice of SVEN lowers the validation margin loss; the same seed reproduces the run", async () => {
  const train = await Dataset.fromSven(join(SVEN, "train", "cwe-089.jsonl"), { maxTokens: 150 });
  const val = await Dataset.fromSven(join(SVEN, "val", "cwe-089.jsonl"), { maxTokens: 200 });
  const guard = Guard.create(model, { layers: [1, 2], aggregation: "attention", seed: 1 });
  const steps: number[] = [];
  const result = await guard.fit(train, { val, epochs: 3, lr: 3e-3, batchSize: 8, seed: 4, onStep: (s) => steps.push(s.loss) });
  assert.ok(result.initialVal && result.epochs.length === 3 && result.steps === steps.length && steps.length > 0);
  const before = result.initialVal!.marginLoss, after = result.epochs[2].val!.marginLoss;
  assert.ok(after < before - 0.03, `validation margin loss ${before} -> ${after}`);
  assert.ok(steps.every(Number.isFinite));
  assert.ok(guard.tokenStats.some((v) => v > 0) && guard.tokenStats.some((v) => v < 0), "token statistics accumulated");

  const small = await Dataset.fromSven(join(SVEN, "train", "cwe-089.jsonl"), { maxTokens: 150, limit: 40 });
  const run = async () => {
    const g = Guard.create(model, { layers: [2], aggregation: "weighted", seed: 1 });
    const losses: number[] = [];
    await g.fit(small, { epochs: 1, batchSize: 4, seed: 9, onStep: (s) => losses.push(s.loss) });
    return { g, losses };
  };
  const a = await run(), b = await run();
  assert.equal(a.losses, b.losses, "same seed, same losses");
  assert.equal(a.g.parameters()["analyzer.fc1.weight"], b.g.parameters()["analyzer.fc1.weight"]);
  await expectError(() => guard.fit(small, { epochs: 0 }), "ERR_ARGUMENT", /epochs/);
  await expectError(() => guard.fit({} as Dataset), "ERR_ARGUMENT", /Dataset/);
  const ac = new AbortController();
  const aborted = guard.fit(small, { epochs: 1, batchSize: 4, cacheHidden: false, signal: ac.signal, onStep: () => ac.abort() });
  await expectError(() => aborted, "ERR_ABORTED", /Guard\.fit was aborted/);
});

test("save then load gives identical scores and statistics; guard.json records the model identity", async () => {
  const dir = join(root, "saved");
  const g = Guard.create(model, { layers: [1, 2], aggregation: "weighted", seed: 2 });
  g.parameters()["aggregator.layer_logits"].set([0.3, -0.2]);
  g.updateTokenStats({ secure: Int32Array.of(1, 2), vulnerable: Int32Array.of(9) });
  await g.save(dir);
  assert.equal((await readdir(dir)).sort(), ["guard.json", "guard.safetensors"]);
  const json = JSON.parse(await readFile(join(dir, "guard.json"), "utf8"));
  assert.is(json.schemaVersion, 1);
  assert.equal(json.layers, [1, 2]);
  assert.is(json.aggregation, "weighted");
  assert.is(json.baseModel.hiddenSize, 64);
  assert.match(json.baseModel.embeddingFingerprint, /^sha256:[0-9a-f]{64}$/);
  const back = await Guard.load(dir, model);
  const s = ids(9, 4);
  assert.equal(Array.from((await back.score(s)).tokens), Array.from((await g.score(s)).tokens));
  assert.equal(back.tokenStats, g.tokenStats);
  for (const [k, v] of Object.entries(g.parameters())) assert.equal(back.parameters()[k], v, k);
});

test("loading onto another model or from a broken folder fails with a coded error naming the problem", async () => {
  const dir = join(root, "broken");
  const g = Guard.create(model, { layers: [1, 2], aggregation: "attention", seed: 2 });
  await g.save(dir);
  await expectError(() => Guard.load(dir, otherShape), "ERR_GUARD_MISMATCH", /hiddenSize 64.*has 32/);
  await expectError(() => Guard.load(dir, sameShape), "ERR_GUARD_MISMATCH", /embeddingFingerprint/);
  await expectError(() => Guard.load(join(root, "nowhere"), model), "ERR_GUARD_FILE", /guard\.json: cannot read/);

  const jsonPath = join(dir, "guard.json"), wPath = join(dir, "guard.safetensors");
  const json = await readFile(jsonPath, "utf8");
  const weights = await readFile(wPath);
  const restore = async () => {
    await writeFile(jsonPath, json);
    await writeFile(wPath, weights);
  };
  const edit = (f: (j: Record<string, unknown>) => void) => {
    const j = JSON.parse(json);
    f(j);
    return writeFile(jsonPath, JSON.stringify(j));
  };
  await writeFile(jsonPath, "{ not json");
  await expectError(() => Guard.load(dir, model), "ERR_GUARD_FILE", /not valid JSON/);
  await edit((j) => (j.schemaVersion = 7));
  await expectError(() => Guard.load(dir, model), "ERR_GUARD_FILE", /schemaVersion 7/);
  await edit((j) => (j.aggregation = "median"));
  await expectError(() => Guard.load(dir, model), "ERR_GUARD_FILE", /aggregation/);
  await edit((j) => (j.layers = [1, 5]));
  await expectError(() => Guard.load(dir, model), "ERR_GUARD_FILE", /layers: guard layer 5 is out of range/);
  await restore();
  await rm(wPath);
  await expectError(() => Guard.load(dir, model), "ERR_GUARD_FILE", /guard\.safetensors: cannot read/);
  const flipped = Buffer.from(weights);
  flipped[flipped.length - 3] ^= 0xff;
  await writeFile(wPath, flipped);
  await expectError(() => Guard.load(dir, model), "ERR_GUARD_FILE", /SHA-256/);
  // A well-formed file with a tensor missing (and a matching checksum): named.
  const params = g.parameters();
  delete params["analyzer.fc3.bias"];
  const tensors = Object.fromEntries(
    Object.entries(params).map(([k, v]) => [k, { dtype: "F32", shape: g.shapes()[k], data: new Uint8Array(v.buffer) }]),
  );
  await writeSafetensors(wPath, { ...tensors, token_stats: { dtype: "F32", shape: [320], data: new Uint8Array(1280) } });
  const { createHash } = await import("node:crypto");
  const sha = createHash("sha256").update(await readFile(wPath)).digest("hex");
  await edit((j) => ((j.weights as { sha256: string }).sha256 = sha));
  await expectError(() => Guard.load(dir, model), "ERR_GUARD_FILE", /missing tensor "analyzer\.fc3\.bias"/);
  await restore();
  await Guard.load(dir, model);
});

test("save into a path that is a file fails and leaves nothing behind", async () => {
  const file = join(root, "a-file");
  await writeFile(file, "x");
  const g = Guard.create(model, { layers: [2], aggregation: "mean" });
  let failed = false;
  await g.save(file).catch(() => (failed = true));
  assert.ok(failed);
  assert.equal((await readdir(root)).filter((n) => n.includes(".tmp-")), []);
  assert.is(await readFile(file, "utf8"), "x");
});

test.run();
