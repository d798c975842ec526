// AdamW, clipping and schedules against float64 references written from
// torch.optim.AdamW's and clip_grad_norm_'s documented arithmetic.
import { test } from "uvu";
import * as assert from "uvu/assert";
import { AdamW, clipGradNorm, learningRate } from "../../lib/index.js";
import { Random } from "../../lib/random.js";
import { expectError } from "../support/expect.js";

function randomArray(r: Random, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r.nextDouble() * 2 - 1) * scale;
  return a;
}

/** torch.optim.AdamW, one tensor, float64. */
function referenceAdamW(p: number[], grads: number[][], lrs: number[], o: { b1: number; b2: number; eps: number; wd: number }): number[] {
  const m = p.map(() => 0);
  const v = p.map(() => 0);
  grads.forEach((g, k) => {
    const t = k + 1;
    const lr = lrs[k];
    for (let i = 0; i < p.length; i++) {
      p[i] *= 1 - lr * o.wd;
      m[i] = o.b1 * m[i] + (1 - o.b1) * g[i];
      v[i] = o.b2 * v[i] + (1 - o.b2) * g[i] * g[i];
      const mh = m[i] / (1 - o.b1 ** t);
      const vh = v[i] / (1 - o.b2 ** t);
      p[i] -= (lr * mh) / (Math.sqrt(vh) + o.eps);
    }
  });
  return p;
}

test("AdamW matches a float64 reference over several steps, with and without decay", async () => {
  const r = new Random(3);
  const n = 40000; // spans several pool chunks
  const w = randomArray(r, n);
  const b = randomArray(r, 7);
  const ref = { w: Array.from(w), b: Array.from(b) };
  const opt = new AdamW({ w, b }, { weightDecay: 0.1, noDecay: (name) => name === "b" });
  const lrs = [1e-2, 5e-3, 2e-3, 1e-3];
  const gw: number[][] = [];
  const gb: number[][] = [];
  for (const lr of lrs) {
    const g = { w: randomArray(r, n, 0.3), b: randomArray(r, 7, 3) };
    gw.push(Array.from(g.w));
    gb.push(Array.from(g.b));
    await opt.step(g, lr);
  }
  const o = { b1: 0.9, b2: 0.999, eps: 1e-8 };
  const rw = referenceAdamW(ref.w, gw, lrs, { ...o, wd: 0.1 });
  const rb = referenceAdamW(ref.b, gb, lrs, { ...o, wd: 0 });
  let worst = 0;
  rw.forEach((x, i) => (worst = Math.max(worst, Math.abs(x - w[i]))));
  rb.forEach((x, i) => (worst = Math.max(worst, Math.abs(x - b[i]))));
  assert.ok(worst < 2e-6, `max abs error ${worst}`);
  assert.is(opt.stepCount, 4);
});

test("AdamW state round-trips: a restored optimizer continues identically", async () => {
  const r = new Random(5);
  const p1 = { a: randomArray(r, 100) };
  const p2 = { a: p1.a.slice() };
  const grads = [0, 1, 2, 3].map(() => ({ a: randomArray(r, 100) }));
  const o1 = new AdamW(p1);
  await o1.step(grads[0], 1e-2);
  await o1.step(grads[1], 1e-2);
  const saved = o1.state();
  p2.a.set(p1.a);
  const o2 = new AdamW(p2);
  o2.loadState(saved);
  for (const g of grads.slice(2)) {
    await o1.step({ a: g.a.slice() }, 1e-2);
    await o2.step({ a: g.a.slice() }, 1e-2);
  }
  assert.equal(Array.from(p1.a), Array.from(p2.a));
});

test("clipGradNorm: global float64 norm, scaled as clip_grad_norm_", async () => {
  const a = new Float32Array([3, 0]);
  const b = new Float32Array([0, 4]);
  const norm = await clipGradNorm([a, b], 1);
  assert.is(norm, 5);
  const s = 1 / (5 + 1e-6);
  assert.ok(Math.abs(a[0] - 3 * s) < 1e-7 && Math.abs(b[1] - 4 * s) < 1e-7);
  const c = new Float32Array([0.1, 0.2]);
  assert.ok(Math.abs((await clipGradNorm([c], Infinity)) - Math.hypot(0.1, 0.2)) < 1e-7);
  assert.equal(Array.from(c), [Math.fround(0.1), Math.fround(0.2)]);
});

test("schedules: warmup, linear, cosine, constant, floor", () => {
  const o = { lr: 1, warmupSteps: 4, totalSteps: 14 };
  assert.equal([0, 1, 2, 3].map((s) => learningRate(s, o)), [0.25, 0.5, 0.75, 1]);
  assert.is(learningRate(4, o), 1);
  assert.ok(Math.abs(learningRate(9, o) - 0.5) < 1e-12); // cosine midpoint
  assert.is(learningRate(14, o), 0);
  assert.is(learningRate(99, o), 0);
  assert.ok(Math.abs(learningRate(9, { ...o, decay: "linear" }) - 0.5) < 1e-12);
  assert.ok(Math.abs(learningRate(14, { ...o, decay: "linear", minLrRatio: 0.1 }) - 0.1) < 1e-12);
  assert.is(learningRate(13, { ...o, decay: "constant" }), 1);
});

test("bad inputs are coded errors", async () => {
  await expectError(async () => new AdamW({}), "ERR_ARGUMENT", /at least one parameter/);
  await expectError(async () => new AdamW({ a: [1, 2] as unknown as Float32Array }), "ERR_ARGUMENT", /"a" must be a Float32Array/);
  await expectError(async () => new AdamW({ a: new Float32Array(2) }, { beta1: 1 }), "ERR_ARGUMENT", /beta1/);
  const opt = new AdamW({ a: new Float32Array(2) });
  await expectError(() => opt.step({ a: new Float32Array(3) }, 1e-3), "ERR_ARGUMENT", /"a" must be a Float32Array of length 2/);
  await expectError(() => opt.step({}, 1e-3), "ERR_ARGUMENT", /gradient "a"/);
  await expectError(() => opt.step({ a: new Float32Array(2) }, NaN), "ERR_ARGUMENT", /lr/);
  await expectError(async () => opt.loadState({ step: 1, m: {}, v: {} }), "ERR_ARGUMENT", /m\["a"\]/);
  await expectError(() => clipGradNorm([new Float32Array(1)], 0), "ERR_ARGUMENT", /maxNorm/);
  await expectError(async () => learningRate(0, { lr: -1, totalSteps: 1 }), "ERR_ARGUMENT", /lr/);
  await expectError(async () => learningRate(-1, { lr: 1, totalSteps: 1 }), "ERR_ARGUMENT", /step/);
  assert.is(opt.stepCount, 0);
});

test.run();
