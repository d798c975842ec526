// The native guard (aggregator + analyzer, forward and backward) against the
// float64 reference in test/guard/reference.ts: forward values for all four
// aggregations with and without dropout, and every gradient (each parameter
// tensor and the hidden states) against finite differences of the reference.
import { test } from "uvu";
import * as assert from "uvu/assert";
import { parameterShapes, type Aggregation } from "../../lib/guard/guard.js";
import { native } from "../../lib/native.js";
import { relativeError } from "../support/compare.js";
import { guardReference, type Params } from "./reference.js";
import { rng } from "../support/random.js";

const d = 6, m = 3, vocab = 11;
const LENGTHS = [2, 1, 3];
const IDS = [4, 7, 4, 0, 10, 7]; // repeated ids: the embedding gradient is scatter-added

function makeParams(agg: Aggregation, seed: number): Record<string, Float32Array> {
  const r = rng(seed);
  const shapes = parameterShapes(d, m, vocab, agg);
  const out: Record<string, Float32Array> = {};
  for (const [name, shape] of Object.entries(shapes)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const fanIn = shape.length === 2 ? shape[1] : 4;
    const a = Float32Array.from({ length: n }, () => (2 * r() - 1) * (1.5 / Math.sqrt(fanIn)));
    if (/ln\d\.weight/.test(name)) for (let i = 0; i < n; i++) a[i] = 1 + 0.3 * (2 * r() - 1);
    if (name === "analyzer.fc4.weight") for (let i = 0; i < n; i++) a[i] *= 3; // scores away from 0.5
    out[name] = a;
  }
  return out;
}

const spec = (aggregation: Aggregation) => ({ hiddenSize: d, layers: m, vocabSize: vocab, aggregation, dropout: 0.1 });
const N = LENGTHS.reduce((a, b) => a + b, 0);

/** Items for the native call and the same hidden states layer-major [m][N][d] for the reference. */
function makeBatch(seed: number) {
  const r = rng(seed);
  const h = Float64Array.from({ length: m * N * d }, () => Float32Array.of(2 * r() - 1)[0] * 2);
  let t0 = 0;
  const items = LENGTHS.map((T) => {
    const ids = Int32Array.from(IDS.slice(t0, t0 + T));
    const hidden = Array.from({ length: m }, (_, l) => Float32Array.from(h.subarray((l * N + t0) * d, (l * N + t0 + T) * d)));
    t0 += T;
    return { ids, hidden };
  });
  return { h, items };
}

const to64 = (p: Record<string, Float32Array>): Params => Object.fromEntries(Object.entries(p).map(([k, v]) => [k, Float64Array.from(v)]));
function maxAbs(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s = Math.max(s, Math.abs(a[i]));
  return s;
}
const argExtreme = (a: Float32Array, sign: number) => a.reduce((best, v, i) => (sign * v > sign * a[best] ? i : best), 0);
const cat = (a: Float32Array[]) => Float64Array.from(a.flatMap((x) => Array.from(x)));

for (const agg of ["attention", "mean", "last", "weighted"] as Aggregation[]) {
  test(`${agg}: forward matches the float64 reference, eval and dropout modes`, async () => {
    const params = makeParams(agg, 11);
    const { h, items } = makeBatch(5);
    const evalOut = await native().guardForward(spec(agg), params, items, { train: false, seed: 0, keepTape: false });
    assert.ok(relativeError(cat(evalOut.tokens), guardReference(agg, h, IDS, m, d, to64(params))) < 1e-5);
    const trainOut = await native().guardForward(spec(agg), params, items, { train: true, seed: 42, keepTape: false });
    assert.ok(relativeError(cat(trainOut.tokens), guardReference(agg, h, IDS, m, d, to64(params), 42)) < 1e-5);
    assert.not.equal(cat(trainOut.tokens), cat(evalOut.tokens), "dropout changes the scores");
  });

  test(`${agg}: every gradient matches finite differences of the reference`, async () => {
    const params = makeParams(agg, 21);
    const { h, items } = makeBatch(9);
    const r = rng(3);
    const g = Float64Array.from({ length: N }, () => 2 * r() - 1); // loss = sum_t g_t score_t
    const train = agg === "attention" || agg === "weighted"; // dropout masks in the backward too
    const seed = train ? 7 : undefined;
    const fwd = await native().guardForward(spec(agg), params, items, { train, seed: seed ?? 0, keepTape: true });
    const grads = Object.fromEntries(Object.entries(params).map(([k, v]) => [k, new Float32Array(v.length)]));
    let t0 = 0;
    const dTokens = LENGTHS.map((T) => Float32Array.from(g.subarray(t0, (t0 += T))));
    const dHidden = await native().guardBackward(spec(agg), params, grads, fwd.tape!, dTokens);

    const p64 = to64(params);
    const loss = (hh: Float64Array, pp: Params) => guardReference(agg, hh, IDS, m, d, pp, seed).reduce((s, v, i) => s + v * g[i], 0);
    const eps = 1e-5;
    const fd = (set: (delta: number) => void, hh: () => Float64Array) => {
      set(eps);
      const up = loss(hh(), p64);
      set(-2 * eps);
      const down = loss(hh(), p64);
      set(eps);
      return (up - down) / (2 * eps);
    };
    const close = (analytic: number, numeric: number, scale: number, what: string) =>
      assert.ok(Math.abs(analytic - numeric) <= 2e-3 * scale + 1e-6, `${what}: native ${analytic} vs finite difference ${numeric}`);

    for (const [name, p] of Object.entries(p64)) {
      const gr = grads[name];
      const scale = maxAbs(gr);
      assert.ok(scale > 0, `${name} has a gradient`);
      // Small tensors entirely; large ones at 6 indices, including the largest entries.
      const idx = p.length <= 64 ? Array.from({ length: p.length }, (_, i) => i)
        : [...Array.from({ length: 4 }, () => Math.floor(r() * p.length)), argExtreme(gr, 1), argExtreme(gr, -1)];
      for (const i of idx) close(gr[i], fd((dl) => (p[i] += dl), () => h), scale, `${agg} ${name}[${i}]`);
    }
    // The embedding rows of unused ids get nothing.
    assert.is(grads["analyzer.token_embedding.weight"][1 * 128], 0);

    const dh = new Float64Array(m * N * d);
    let s0 = 0;
    LENGTHS.forEach((T, i) => {
      for (let l = 0; l < m; l++) dh.set(dHidden[i][l], (l * N + s0) * d);
      s0 += T;
    });
    const scale = maxAbs(dh);
    for (let k = 0; k < dh.length; k += agg === "last" ? 1 : 2) close(dh[k], fd((dl) => (h[k] += dl), () => h), scale, `${agg} dHidden[${k}]`);
    if (agg === "last") assert.is(maxAbs(dh.subarray(0, N * d)), 0, "last: earlier layers get no gradient");
  });
}

test("attention folded for inference (guardFuse) gives the reference scores", async () => {
  const params = makeParams("attention", 31);
  const { h, items } = makeBatch(13);
  const fused = await native().guardFuse(spec("attention"), params);
  assert.is(fused["fused.query_key"].length, d * d);
  assert.is(fused["fused.value_fc1"].length, 512 * d);
  const out = await native().guardForward(spec("attention"), params, items, { train: false, seed: 0, keepTape: false, fused });
  assert.ok(relativeError(cat(out.tokens), guardReference("attention", h, IDS, m, d, to64(params))) < 1e-5);
  const call = (o: object) => native().guardForward(spec("attention"), params, items, { train: false, seed: 0, keepTape: false, ...o });
  for (const [o, re] of [[{ fused: { ...fused, "fused.value_fc1": new Float32Array(3) } }, /fused\.value_fc1/], [{ fused, train: true }, /train false/]] as const) {
    let err: (Error & { code?: string }) | undefined;
    await Promise.resolve().then(() => call(o)).catch((e) => (err = e));
    assert.is(err?.code, "ERR_ARGUMENT");
    assert.match(err!.message, re);
  }
});

test("guard kernels: bad specs, params and batches are ERR_ARGUMENT, ids out of range ERR_TOKEN_ID", async () => {
  const params = makeParams("mean", 1);
  const { items } = makeBatch(1);
  const call = (s: unknown, p: unknown, b: unknown) =>
    (native().guardForward as unknown as (...a: unknown[]) => Promise<unknown>)(s, p, b, { train: false, seed: 0, keepTape: false });
  const expect = async (fn: () => unknown, code: string, re: RegExp) => {
    let err: (Error & { code?: string }) | undefined;
    try {
      await fn();
    } catch (e) {
      err = e as Error & { code?: string };
    }
    assert.ok(err, `expected ${code}`);
    assert.is(err!.code, code, err!.message);
    assert.match(err!.message, re);
  };
  await expect(() => call({ ...spec("mean"), aggregation: "median" }, params, items), "ERR_ARGUMENT", /unknown aggregation "median"/);
  await expect(() => call(spec("attention"), params, items), "ERR_ARGUMENT", /aggregator\.query\.weight/);
  await expect(() => call(spec("mean"), { ...params, "analyzer.fc2.weight": new Float32Array(3) }, items), "ERR_ARGUMENT", /fc2\.weight.*expected 131072/);
  await expect(() => call(spec("mean"), params, [{ ids: items[0].ids, hidden: items[0].hidden.slice(1) }]), "ERR_ARGUMENT", /3 Float32Arrays/);
  await expect(() => call(spec("mean"), params, [{ ids: Int32Array.of(0, 1), hidden: items[1].hidden }]), "ERR_ARGUMENT", /expected tokens \* hiddenSize = 12/);
  await expect(() => call(spec("mean"), params, [{ ...items[1], ids: Int32Array.of(vocab) }]), "ERR_TOKEN_ID", /outside the vocabulary/);
});

test.run();
