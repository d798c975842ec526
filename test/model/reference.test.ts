// Invariants of the float64 reference forward that can be checked by hand, so
// that the ground truth the engine is compared against is itself trustworthy.
import { test } from "uvu";
import * as assert from "uvu/assert";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeTinyCheckpoint, tinySpecs, type TinyCheckpoint, type TinySpec } from "../support/checkpoint.js";
import { applyRope, referenceForward } from "../support/reference.js";

let root = "";
let count = 0;
test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-reference-"));
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

function tiny(spec: TinySpec): Promise<TinyCheckpoint> {
  return makeTinyCheckpoint(join(root, `ckpt-${count++}`), spec);
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.is(a.length, b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

function assertClose(a: ArrayLike<number>[], b: ArrayLike<number>[], tolerance: number, what: string): void {
  assert.is(a.length, b.length, what);
  a.forEach((row, i) => assert.ok(maxAbsDiff(row, b[i]) <= tolerance, `${what} row ${i}: ${maxAbsDiff(row, b[i])}`));
}

const values = (ckpt: TinyCheckpoint, name: string) => ckpt.weights.get(name)!.values;
const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((s, v, i) => s + v * b[i], 0);
const ids = [3, 17, 5, 200, 42, 7, 99, 1];

test("RoPE: identity at position 0, a plain rotation for d = 2, linear scaling divides positions", () => {
  const x = Float64Array.from([0.3, -1.2, 0.7, 2.0, -0.5, 0.1]);
  assert.equal(Array.from(applyRope(x, 0, 10000)), Array.from(x));
  const rotated = applyRope(Float64Array.from([1, 0]), 0.5, 10000);
  assert.ok(maxAbsDiff(rotated, [Math.cos(0.5), Math.sin(0.5)]) < 1e-15);
  assert.ok(maxAbsDiff(applyRope(x, 6, 500000, 2), applyRope(x, 3, 500000)) < 1e-12);
  // Rotate-half pairs element i with i + d/2 (not 2i with 2i+1), frequency theta^(-2i/d).
  const first = applyRope(Float64Array.from([1, 0, 0, 0]), 1, 100);
  assert.ok(maxAbsDiff(first, [Math.cos(1), 0, Math.sin(1), 0]) < 1e-15);
  const second = applyRope(Float64Array.from([0, 1, 0, 0]), 1, 100);
  assert.ok(maxAbsDiff(second, [0, Math.cos(0.1), 0, Math.sin(0.1)]) < 1e-15);
  assert.ok(Math.abs(dot(applyRope(x, 9, 10000), applyRope(x, 9, 10000)) - dot(x, x)) < 1e-12, "norm kept");
});

test("RoPE: q.k depends only on the distance between positions", () => {
  const q = Float64Array.from([0.3, -1.2, 0.7, 2.0]);
  const k = Float64Array.from([1.1, 0.4, -0.6, 0.9]);
  const near = dot(applyRope(q, 5, 10000), applyRope(k, 2, 10000));
  const far = dot(applyRope(q, 105, 10000), applyRope(k, 102, 10000));
  assert.ok(Math.abs(near - far) < 1e-9);
  assert.ok(Math.abs(near - dot(applyRope(q, 4, 10000), applyRope(k, 2, 10000))) > 1e-3, "distance matters");
});

test("shapes: L + 1 hidden states, embeddings first, logits [seq][vocab]", async () => {
  const spec = tinySpecs()["llama-f16"];
  const ckpt = await tiny(spec);
  const out = referenceForward(ckpt.config, ckpt.weights, ids);
  assert.is(out.hiddenStates.length, spec.layers + 1);
  for (const layer of out.hiddenStates) {
    assert.is(layer.length, ids.length);
    layer.forEach((row) => assert.is(row.length, spec.hidden));
  }
  const embed = values(ckpt, "model.embed_tokens.weight");
  ids.forEach((id, t) => {
    assert.equal(
      Array.from(out.hiddenStates[0][t]),
      Array.from(embed.subarray(id * spec.hidden, (id + 1) * spec.hidden)),
    );
  });
  assert.is(out.logits.length, ids.length);
  out.logits.forEach((row) => assert.is(row.length, spec.vocab));
});

test("the last hidden state is the final RMSNorm: rows have RMS 1 when the norm weight is 1", async () => {
  const ckpt = await tiny(tinySpecs()["qwen2-f32-gqa-tied"]);
  values(ckpt, "model.norm.weight").fill(1);
  const out = referenceForward(ckpt.config, ckpt.weights, ids);
  for (const row of out.hiddenStates[out.hiddenStates.length - 1]) {
    assert.ok(Math.abs(Math.sqrt(dot(row, row) / row.length) - 1) < 1e-5);
  }
});

test("attention by hand: token 0 returns its v, token 1 mixes v0 and v1 by softmax(q.k / sqrt(head_dim))", async () => {
  const spec = tinySpecs()["qwen2-f32-gqa-tied"];
  const ckpt = await tiny(spec);
  const p = "model.layers.0";
  // Make o_proj the identity and switch the MLP off, so layer 0's output is x + attention(x).
  const wo = values(ckpt, `${p}.self_attn.o_proj.weight`).fill(0);
  for (let i = 0; i < spec.hidden; i++) wo[i * spec.hidden + i] = 1;
  values(ckpt, `${p}.mlp.down_proj.weight`).fill(0);

  const headDim = spec.hidden / spec.heads;
  const kvDim = spec.kvHeads * headDim;
  const embed = values(ckpt, "model.embed_tokens.weight");
  const x = [0, 1].map((t) => embed.slice(ids[t] * spec.hidden, (ids[t] + 1) * spec.hidden));
  const inputNorm = values(ckpt, `${p}.input_layernorm.weight`);
  const normed = x.map((xt) => {
    const rms = Math.sqrt(dot(xt, xt) / xt.length + (ckpt.config.rms_norm_eps as number));
    return xt.map((v, i) => (v / rms) * inputNorm[i]);
  });
  const project = (m: string, rows: number, xt: Float64Array) => {
    const w = values(ckpt, `${p}.self_attn.${m}.weight`);
    const b = values(ckpt, `${p}.self_attn.${m}.bias`);
    return Float64Array.from(
      { length: rows },
      (_, r) => b[r] + dot(w.subarray(r * spec.hidden, (r + 1) * spec.hidden), xt),
    );
  };
  const theta = ckpt.config.rope_theta as number;
  const head = (v: Float64Array, h: number) => v.slice(h * headDim, (h + 1) * headDim);
  const q1 = project("q_proj", spec.hidden, normed[1]);
  const k = normed.map((xt) => project("k_proj", kvDim, xt));
  const v = normed.map((xt) => project("v_proj", kvDim, xt));

  const expected = [x[0].slice(), x[1].slice()];
  for (let h = 0; h < spec.heads; h++) {
    const kvHead = Math.floor(h / (spec.heads / spec.kvHeads));
    const qh = applyRope(head(q1, h), 1, theta);
    const scores = [0, 1].map((s) => dot(qh, applyRope(head(k[s], kvHead), s, theta)) / Math.sqrt(headDim));
    const weights = scores.map((sc) => Math.exp(sc) / (Math.exp(scores[0]) + Math.exp(scores[1])));
    for (let i = 0; i < headDim; i++) {
      expected[0][h * headDim + i] += head(v[0], kvHead)[i];
      expected[1][h * headDim + i] += weights[0] * head(v[0], kvHead)[i] + weights[1] * head(v[1], kvHead)[i];
    }
  }
  const out = referenceForward(ckpt.config, ckpt.weights, ids);
  assert.ok(maxAbsDiff(out.hiddenStates[1][0], expected[0]) < 1e-12, "token 0");
  assert.ok(maxAbsDiff(out.hiddenStates[1][1], expected[1]) < 1e-12, "token 1");
});

test("causal: logits of a prefix do not depend on later tokens", async () => {
  const ckpt = await tiny(tinySpecs()["llama-bf16-gqa-rope-linear"]);
  const full = referenceForward(ckpt.config, ckpt.weights, ids);
  const prefix = referenceForward(ckpt.config, ckpt.weights, ids.slice(0, 5));
  assertClose(prefix.logits, full.logits.slice(0, 5), 1e-12, "prefix logits");
  const changed = referenceForward(ckpt.config, ckpt.weights, [...ids.slice(0, 5), 11, 12, 13]);
  assertClose(changed.logits.slice(0, 5), full.logits.slice(0, 5), 1e-12, "same prefix, other suffix");
  assert.ok(maxAbsDiff(changed.logits[6], full.logits[6]) > 1e-3, "later tokens do change later logits");
});

test("tied equals untied with lm_head = embed_tokens; a stored lm_head is ignored when tied", async () => {
  const ckpt = await tiny(tinySpecs()["llama-f32-untied-mha"]);
  const untied = referenceForward(ckpt.config, ckpt.weights, ids);
  values(ckpt, "lm_head.weight").set(values(ckpt, "model.embed_tokens.weight"));
  const copied = referenceForward(ckpt.config, ckpt.weights, ids);
  const tied = referenceForward({ ...ckpt.config, tie_word_embeddings: true }, ckpt.weights, ids);
  assertClose(tied.logits, copied.logits, 0, "tied vs copied lm_head");
  assert.ok(maxAbsDiff(untied.logits[0], tied.logits[0]) > 1e-3, "lm_head.weight is used when untied");
});

test("GQA equals MHA with each kv head repeated for its query group", async () => {
  const spec = tinySpecs()["qwen2-f32-gqa-tied"];
  const ckpt = await tiny(spec);
  const headDim = spec.hidden / spec.heads;
  const group = spec.heads / spec.kvHeads;
  const repeated = new Map(ckpt.weights);
  for (let layer = 0; layer < spec.layers; layer++) {
    for (const name of ["k_proj.weight", "k_proj.bias", "v_proj.weight", "v_proj.bias"]) {
      const key = `model.layers.${layer}.self_attn.${name}`;
      const { shape, values: kv } = ckpt.weights.get(key)!;
      const rowSize = shape.length === 2 ? shape[1] : 1;
      const block = headDim * rowSize;
      const out = new Float64Array(kv.length * group);
      for (let h = 0; h < spec.heads; h++)
        out.set(kv.subarray(Math.floor(h / group) * block, (Math.floor(h / group) + 1) * block), h * block);
      repeated.set(key, { shape: [shape[0] * group, ...shape.slice(1)], values: out });
    }
  }
  const gqa = referenceForward(ckpt.config, ckpt.weights, ids);
  const mha = referenceForward({ ...ckpt.config, num_key_value_heads: spec.heads }, repeated, ids);
  assertClose(mha.logits, gqa.logits, 1e-12, "logits");
});

test("bad inputs name what is wrong", async () => {
  const ckpt = await tiny(tinySpecs()["llama-f32-untied-mha"]);
  assert.throws(() => referenceForward(ckpt.config, ckpt.weights, [320]), /token id 320/);
  const missing = new Map(ckpt.weights);
  missing.delete("model.layers.1.mlp.up_proj.weight");
  assert.throws(() => referenceForward(ckpt.config, missing, [1]), /model\.layers\.1\.mlp\.up_proj\.weight/);
  const scaling = { ...ckpt.config, rope_scaling: { rope_type: "yarn", factor: 4 } };
  assert.throws(() => referenceForward(scaling, ckpt.weights, [1]), /yarn/);
});

test("seq 16 x hidden 64 x 3 layers x vocab 512 runs well under a second", async () => {
  const spec: TinySpec = { ...tinySpecs()["llama-f16"], layers: 3, vocab: 512 };
  const ckpt = await tiny(spec);
  const started = performance.now();
  referenceForward(
    ckpt.config,
    ckpt.weights,
    Array.from({ length: 16 }, (_, i) => (i * 37) % 512),
  );
  const elapsed = performance.now() - started;
  assert.ok(elapsed < 500, `${elapsed.toFixed(0)} ms`);
});

test.run();
