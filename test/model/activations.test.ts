// Model.load's `activations` option on BF16 checkpoints: "bfloat16" against the
// float64 reference with every linear input rounded to BF16, "float32" against
// the exact reference, batch invariance of decoding with AMX, "auto"
// resolution, model.info.activations and bad values.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Model } from "../../lib/index.js";
import { native } from "../../lib/native.js";
import { makeTinyCheckpoint, tinySpecs, type TinyCheckpoint } from "../support/checkpoint.js";
import { flatten, randomIds, relativeError } from "../support/compare.js";
import { expectError } from "../support/expect.js";
import { bf16Agreement, bf16Problems, TIGHT } from "../support/bf16.js";
import { referenceForward } from "../support/reference.js";

const testing = (native() as unknown as { testing: { quantInfo(): { amx: boolean }; setAmx(on: boolean): void } }).testing;
const AMX = testing.quantInfo().amx;

// "float32" vs the exact reference: 1e-4, model.test.ts's tolerance.
// "bfloat16" vs the BF16-rounding reference: test/support/bf16.ts says why a
// single max-error tolerance cannot work and what is checked instead.
const TOL_F32 = 1e-4;
const BF16_SPECS = ["qwen2-bf16-tied", "llama-bf16-gqa-rope-linear"] as const;

let root = "";
const ckpts = new Map<string, TinyCheckpoint>();

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-acts-"));
  for (const name of BF16_SPECS) ckpts.set(name, await makeTinyCheckpoint(join(root, name), tinySpecs()[name]));
});
test.after(async () => {
  testing.setAmx(true);
  await rm(root, { recursive: true, force: true });
});

for (const name of BF16_SPECS) {
  test(`activations "bfloat16" matches the BF16-rounding reference, "float32" the exact one: ${name}`, async () => {
    const spec = tinySpecs()[name];
    const ckpt = ckpts.get(name)!;
    const bf = await Model.load(ckpt.dir, { activations: "bfloat16", kvCacheDtype: "float32" });
    const f32 = await Model.load(ckpt.dir, { activations: "float32", kvCacheDtype: "float32" });
    assert.is(bf.info.activations, "bfloat16");
    assert.is(f32.info.activations, "float32");
    const agreement = await bf16Agreement(bf, ckpt, spec.seed);
    assert.equal(bf16Problems(agreement), [], JSON.stringify(agreement));
    const ids = randomIds(21, spec.vocab, spec.seed + 100);
    const out = await f32.forward(ids, { hiddenStates: "all" });
    const exact = referenceForward(ckpt.config, ckpt.weights, ids);
    let err = relativeError(out.logits.data, flatten(exact.logits));
    for (let l = 0; l <= spec.layers; l++) err = Math.max(err, relativeError(out.hiddenStates.get(l)!.data, flatten(exact.hiddenStates[l])));
    assert.ok(err <= TOL_F32, `float32 vs the exact reference: ${err}`);
    // Rounding changes the result well beyond float32's tolerance (the modes are told apart).
    const rounded = referenceForward(ckpt.config, ckpt.weights, ids, { bf16Activations: true });
    assert.ok(relativeError(flatten(rounded.logits), flatten(exact.logits)) > 5 * TOL_F32, "rounding changes the logits");
    assert.ok(relativeError(out.logits.data, flatten(rounded.logits)) > 10 * TIGHT, "float32 is not the rounding reference");
    bf.dispose();
    f32.dispose();
  });
}

test("AMX off (DEEPGUARD_AMX=0): \"bfloat16\" still rounds, on the f32 kernels (same check)", async () => {
  const name = "qwen2-bf16-tied";
  const spec = tinySpecs()[name];
  const ckpt = ckpts.get(name)!;
  testing.setAmx(false);
  try {
    const bf = await Model.load(ckpt.dir, { activations: "bfloat16", kvCacheDtype: "float32" });
    assert.is(bf.info.activations, "bfloat16");
    const agreement = await bf16Agreement(bf, ckpt, spec.seed + 1);
    assert.equal(bf16Problems(agreement), [], JSON.stringify(agreement));
    bf.dispose();
  } finally {
    testing.setAmx(true);
  }
});

test("with AMX a sequence decodes to the same bits in an evalBatch of 21 and as one forward; alone within 1e-5", async () => {
  if (!AMX) return;
  const name = "llama-bf16-gqa-rope-linear";
  const spec = tinySpecs()[name];
  const model = await Model.load(ckpts.get(name)!.dir, { activations: "bfloat16" });
  const prompt = randomIds(9, spec.vocab, 1);
  const next = randomIds(4, spec.vocab, 2);
  const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

  // Alone, each decode step is one row: the AVX-512 kernel on the same
  // BF16-rounded activations, so only the f32 summation order differs.
  const alone = model.createSession();
  await alone.eval(prompt);
  const solo: Float32Array[] = [];
  for (const t of next) solo.push((await alone.eval([t])).logits.data.slice());

  const target = model.createSession();
  await target.eval(prompt);
  const others = Array.from({ length: 20 }, () => model.createSession());
  await Promise.all(others.map((s, i) => s.eval(randomIds(3 + (i % 7), spec.vocab, 10 + i))));
  const batched: number[][] = [];
  for (let step = 0; step < next.length; step++) {
    const items = [
      ...others.slice(0, 10).map((session, i) => ({ session, tokens: [(i * 7 + step) % spec.vocab] })),
      { session: target, tokens: [next[step]] },
      ...others.slice(10).map((session, i) => ({ session, tokens: [(i * 11 + step) % spec.vocab] })),
    ];
    const results = await model.evalBatch(items);
    batched.push(bits(results[10].logits.data));
    const err = relativeError(results[10].logits.data, solo[step]);
    assert.ok(err <= 1e-5, `step ${step}: batched vs solo decode ${err}`);
  }
  // Recomputing the whole sequence in one pass gives the same bits as the
  // batched decode: linear rows are batch invariant on the tiles, and norms,
  // RoPE and attention are computed per row in the same order whatever the chunk.
  const full = await model.forward([...prompt, ...next], { logits: "all" });
  next.forEach((_, i) => assert.equal(bits(full.logits.row(prompt.length + i)), batched[i], `batched step ${i} vs recomputation`));
  model.dispose();
});

test("\"auto\" (the default) resolves to bfloat16 exactly when AMX is active; info.activations reports it", async () => {
  const ckpt = ckpts.get("qwen2-bf16-tied")!;
  const def = await Model.load(ckpt.dir);
  assert.is(def.info.activations, AMX ? "bfloat16" : "float32");
  const auto = await Model.load(ckpt.dir, { activations: "auto" });
  assert.is(auto.info.activations, def.info.activations);
  testing.setAmx(false);
  try {
    const off = await Model.load(ckpt.dir);
    assert.is(off.info.activations, "float32");
    off.dispose();
  } finally {
    testing.setAmx(true);
  }
  def.dispose();
  auto.dispose();
});

test("bad activations values are ERR_ARGUMENT naming the option", async () => {
  const dir = ckpts.get("qwen2-bf16-tied")!.dir;
  for (const bad of ["f16", "bf16", "", 16, null, true]) {
    await expectError(() => Model.load(dir, { activations: bad as never }), "ERR_ARGUMENT", /Model\.load option "activations"/);
  }
});

test.run();
