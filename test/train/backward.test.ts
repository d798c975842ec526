// The training pass end to end: its forward equals the inference engine, and the
// LoRA gradients of CE + KL + an injected hidden-state loss equal central finite
// differences of the float64 reference forward with merged weights W + s·B·A.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Model, type LoadOptions } from "../../lib/index.js";
import { LoraParameters, trainForward } from "../../lib/train/lora.js";
import { mergeAdapter, type TinyAdapter } from "../support/adapter.js";
import { makeTinyCheckpoint, tinySpecs, type TinyCheckpoint, type TinySpec } from "../support/checkpoint.js";
import { randomIds, relativeError } from "../support/compare.js";
import { expectError } from "../support/expect.js";
import { referenceForward } from "../support/reference.js";
import { Random } from "../../lib/random.js";

let root = "";
let n = 0;
test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-backward-"));
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

async function load(spec: TinySpec, options?: LoadOptions): Promise<{ ckpt: TinyCheckpoint; model: Model }> {
  const ckpt = await makeTinyCheckpoint(join(root, `ckpt-${n++}`), spec);
  // The training forward keeps exact K/V: compare with an F32 KV cache.
  return { ckpt, model: await Model.load(ckpt.dir, { kvCacheDtype: "float32", ...options }) };
}

for (const name of ["qwen2-f32-gqa-tied", "llama-bf16-gqa-rope-linear", "llama-attention-bias"]) {
  test(`training forward (no adapter) equals the inference forward: ${name}`, async () => {
    // Training always runs f32 activations: the inference forward it must equal is "float32".
    const { model } = await load(tinySpecs()[name], { activations: "float32" });
    const ids = Int32Array.from(randomIds(13, model.config.vocabSize, 7));
    const pass = await trainForward(model, ids, null, { returnLogits: true, capture: [0, 1, model.config.numLayers] });
    const ref = await model.forward(ids, { hiddenStates: [0, 1, model.config.numLayers] });
    assert.ok(relativeError(pass.logits!, ref.logits.data) < 1e-5, "logits");
    for (const [i, h] of [0, 1, model.config.numLayers].entries()) {
      assert.ok(relativeError(pass.hidden[i], ref.hiddenStates.get(h)!.data) < 1e-5, `hidden ${h}`);
    }
    pass.dispose();
    model.dispose();
  });
}

// float64 softmax helpers for the reference loss.
function logSoftmax(z: ArrayLike<number>): Float64Array {
  let m = -Infinity;
  for (let i = 0; i < z.length; i++) m = Math.max(m, z[i]);
  let s = 0;
  for (let i = 0; i < z.length; i++) s += Math.exp(z[i] - m);
  const lse = m + Math.log(s);
  return Float64Array.from(z, (v) => v - lse);
}

const ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;

for (const [name, specName, recompute] of [
  ["f32 GQA tied", "qwen2-f32-gqa-tied", false],
  ["f32 untied MHA, recompute", "llama-f32-untied-mha", true],
] as const) {
  test(`LoRA gradients of CE + KL + hidden-state loss match float64 finite differences: ${name}`, async () => {
    const spec = tinySpecs()[specName];
    const { ckpt, model } = await load(spec);
    const L = spec.layers;
    const lora = LoraParameters.create(model, { rank: 3, alpha: 5, targetModules: [...ALL] }, 3);
    const rng = new Random(11);
    // Non-zero B so that A gets a gradient too.
    for (const [key, p] of Object.entries(lora.parameters())) if (key.includes("lora_B")) for (let i = 0; i < p.length; i++) p[i] = (rng.nextDouble() - 0.5) * 0.4;
    const T = 9;
    const ids = Int32Array.from(randomIds(T, spec.vocab, 5));
    const targets = Int32Array.from({ length: T }, (_, t) => (t + 1 < T ? ids[t + 1] : -1));
    const ceWeights = Float32Array.from({ length: T }, (_, t) => (t % 3 === 1 ? 0 : 1 + t / 10));
    const klWeights = Float32Array.from({ length: T }, (_, t) => 0.5 + t / 20);
    const capture = [1, L];
    const G = capture.map(() => Float32Array.from({ length: T * spec.hidden }, () => rng.nextDouble() - 0.5));
    const ceCoef = 0.7, klCoef = 1.3;
    const pass = await trainForward(model, ids, lora, { targets, ceWeights, klWeights, capture, recompute });
    await pass.backward({ ceCoef, klCoef, dHidden: G });

    const base = referenceForward(ckpt.config, ckpt.weights, Array.from(ids));
    const baseLog = base.logits.map(logSoftmax);
    const params = lora.parameters();
    const lossAt = (): number => {
      const factors: TinyAdapter["factors"] = new Map();
      for (const l of lora.layers)
        for (const t of lora.targets) {
          const module = ["gate_proj", "up_proj", "down_proj"].includes(t) ? "mlp" : "self_attn";
          const prefix = `base_model.model.model.layers.${l}.${module}.${t}`;
          const [out, inn] = ckpt.weights.get(`model.layers.${l}.${module}.${t}.weight`)!.shape;
          factors.set(`model.layers.${l}.${module}.${t}.weight`, {
            a: Float64Array.from(params[`${prefix}.lora_A.weight`]), b: Float64Array.from(params[`${prefix}.lora_B.weight`]), out, in: inn,
          });
        }
      const merged = mergeAdapter(ckpt.weights, { dir: "", config: {}, factors, scale: lora.scale }, lora.rank);
      const ref = referenceForward(ckpt.config, merged, Array.from(ids));
      let loss = 0;
      for (let t = 0; t < T; t++) {
        const lp = logSoftmax(ref.logits[t]);
        if (targets[t] >= 0) loss += ceCoef * ceWeights[t] * -lp[targets[t]];
        let kl = 0;
        for (let i = 0; i < lp.length; i++) kl += Math.exp(baseLog[t][i]) * (baseLog[t][i] - lp[i]);
        loss += klCoef * klWeights[t] * kl;
      }
      capture.forEach((h, c) => {
        const rows = ref.hiddenStates[h];
        for (let t = 0; t < T; t++) for (let i = 0; i < spec.hidden; i++) loss += G[c][t * spec.hidden + i] * rows[t][i];
      });
      return loss;
    };
    // The forward's loss sums equal the reference's.
    const grads = lora.gradients();
    const got: number[] = [], want: number[] = [];
    const pick = new Random(2);
    for (const key of Object.keys(params)) {
      if (!/layers\.(0|1)\.(self_attn\.(q|v|o)|mlp\.(gate|down))_proj/.test(key)) continue;
      const p = params[key];
      for (let k = 0; k < 2; k++) {
        const i = Math.floor(pick.nextDouble() * p.length);
        const keep = p[i];
        const h = 1e-2;
        p[i] = keep + h;
        const up = lossAt();
        p[i] = keep - h;
        const down = lossAt();
        p[i] = keep;
        want.push((up - down) / (2 * h));
        got.push(grads[key][i]);
      }
    }
    const err = relativeError(got, want);
    if (process.env.DG_VERBOSE) console.log(name, err, got.slice(0, 6), want.slice(0, 6));
    assert.ok(err < 2e-3, `gradient relative error ${err}\n got  ${got.map((v) => v.toFixed(5))}\n want ${want.map((v) => v.toFixed(5))}`);
    pass.dispose();
    model.dispose();
  });
}

test("LoRA dropout: the same mask in forward, backward and recompute; gradients match finite differences of the dropped forward", async () => {
  const spec = tinySpecs()["qwen2-f32-gqa-tied"];
  const { model } = await load(spec);
  const lora = LoraParameters.create(model, { rank: 2, alpha: 4, dropout: 0.3, targetModules: ["q_proj", "up_proj", "down_proj"] }, 9);
  const rng = new Random(5);
  const params = lora.parameters();
  for (const [key, p] of Object.entries(params)) if (key.includes("lora_B")) for (let i = 0; i < p.length; i++) p[i] = (rng.nextDouble() - 0.5) * 0.5;
  const T = 7;
  const ids = Int32Array.from(randomIds(T, spec.vocab, 3));
  const targets = Int32Array.from({ length: T }, (_, t) => (t + 1 < T ? ids[t + 1] : -1));
  const run = async (recompute: boolean, seed: number) => {
    lora.zeroGrad();
    const pass = await trainForward(model, ids, lora, { targets, recompute, seed });
    await pass.backward({ ceCoef: 1, klCoef: 0 });
    pass.dispose();
    return { ce: pass.ce, grads: Object.fromEntries(Object.entries(lora.gradients()).map(([k, g]) => [k, g.slice()])) };
  };
  const a = await run(false, 17), b = await run(true, 17), c = await run(false, 18);
  assert.is(a.ce, b.ce);
  for (const k of Object.keys(a.grads)) assert.equal(Array.from(b.grads[k]), Array.from(a.grads[k]), k);
  assert.ok(a.ce !== c.ce, "another seed draws another mask");
  const off = await trainForward(model, ids, lora, { targets, seed: 17, train: false });
  assert.ok(off.ce !== a.ce, "no dropout when not training");
  off.dispose();
  // Central differences of the dropped forward (same seed) on a few B and A entries.
  const got: number[] = [], want: number[] = [];
  for (const key of Object.keys(params).filter((k) => k.includes("layers.1"))) {
    const p = params[key];
    for (const i of [0, Math.floor(p.length / 2)]) {
      const keep = p[i];
      const h = 2e-2;
      p[i] = keep + h;
      const up = (await run(false, 17)).ce;
      p[i] = keep - h;
      const down = (await run(false, 17)).ce;
      p[i] = keep;
      want.push((up - down) / (2 * h));
      got.push(a.grads[key][i]);
    }
  }
  assert.ok(relativeError(got, want) < 2e-2, `dropout gradients ${relativeError(got, want)}: ${got} vs ${want}`);
  model.dispose();
});

test("training pass: bad ids, capture and targets are coded errors", async () => {
  const { model } = await load(tinySpecs()["qwen2-f32-gqa-tied"]);
  await expectError(() => trainForward(model, Int32Array.from([1, 99999]), null), "ERR_TOKEN_ID");
  await expectError(() => trainForward(model, new Int32Array(0), null), "ERR_ARGUMENT");
  await expectError(() => trainForward(model, Int32Array.from([1, 2]), null, { capture: [5] }), "ERR_ARGUMENT");
  await expectError(() => trainForward(model, Int32Array.from([1, 2]), null, { targets: Int32Array.from([1]) }), "ERR_ARGUMENT");
  model.dispose();
});

test.run();
