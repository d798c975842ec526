/**
 * A float64 reference of the guard (DESIGN.md "Security modules"), written from
 * the formulas with plain loops and the attention aggregator in its textbook
 * form (k_l and v_l formed explicitly), independent of native/guard.
 */
export type Aggregation = "attention" | "mean" | "last" | "weighted";
export type Params = Record<string, Float64Array>;

const E = 128, H1 = 512, H2 = 256, H3 = 128, EPS = 1e-5;

function linear(x: Float64Array, T: number, w: Float64Array, b: Float64Array | null, out: number, inp: number): Float64Array {
  const y = new Float64Array(T * out);
  for (let t = 0; t < T; t++)
    for (let o = 0; o < out; o++) {
      let s = b ? b[o] : 0;
      for (let i = 0; i < inp; i++) s += w[o * inp + i] * x[t * inp + i];
      y[t * out + o] = s;
    }
  return y;
}

function layernorm(x: Float64Array, T: number, d: number, w: Float64Array, b: Float64Array): Float64Array {
  const y = new Float64Array(T * d);
  for (let t = 0; t < T; t++) {
    let mu = 0;
    for (let i = 0; i < d; i++) mu += x[t * d + i];
    mu /= d;
    let v = 0;
    for (let i = 0; i < d; i++) v += (x[t * d + i] - mu) ** 2;
    const r = 1 / Math.sqrt(v / d + EPS);
    for (let i = 0; i < d; i++) y[t * d + i] = (x[t * d + i] - mu) * r * w[i] + b[i];
  }
  return y;
}

const relu = (x: Float64Array) => x.map((v) => (v > 0 ? v : 0));

const M64 = (1n << 64n) - 1n;
function splitmix64(x: bigint): bigint {
  x = (x + 0x9e3779b97f4a7c15n) & M64;
  x = ((x ^ (x >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  x = ((x ^ (x >> 27n)) * 0x94d049bb133111ebn) & M64;
  return x ^ (x >> 31n);
}

/** The keep mask of native dropout_forward (ops.h): element i kept iff splitmix64(...) / 2^64 >= p. */
export function dropoutMask(n: number, p: number, seed: number, stream: number): Uint8Array {
  const key = splitmix64(BigInt(seed) ^ splitmix64(BigInt(stream) + 0x5851f42d4c957f2dn));
  const threshold = p * 2 ** 64;
  const mask = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const r = splitmix64((key + BigInt(i) * 0xd1b54a32d192ed03n) & M64);
    mask[i] = Number(r) >= threshold ? 1 : 0;
  }
  return mask;
}

/** a [N][d] from h (layer-major [m][N][d]). */
export function aggregate(agg: Aggregation, h: Float64Array, m: number, N: number, d: number, p: Params): Float64Array {
  const out = new Float64Array(N * d);
  const at = (l: number, t: number, i: number) => h[(l * N + t) * d + i];
  if (agg === "mean" || agg === "last" || agg === "weighted") {
    let w = new Float64Array(m);
    if (agg === "mean") w.fill(1 / m);
    else if (agg === "last") w[m - 1] = 1;
    else {
      const lg = p["aggregator.layer_logits"];
      const mx = Math.max(...lg);
      w = lg.map((v) => Math.exp(v - mx));
      const s = w.reduce((a, b) => a + b, 0);
      w = w.map((v) => v / s);
    }
    for (let t = 0; t < N; t++) for (let i = 0; i < d; i++) for (let l = 0; l < m; l++) out[t * d + i] += w[l] * at(l, t, i);
    return out;
  }
  const P = (n: string) => p[`aggregator.${n}`];
  for (let t = 0; t < N; t++) {
    const mu = new Float64Array(d);
    for (let l = 0; l < m; l++) for (let i = 0; i < d; i++) mu[i] += at(l, t, i) / m;
    const q = linear(mu, 1, P("query.weight"), P("query.bias"), d, d);
    const ks: Float64Array[] = [], vs: Float64Array[] = [];
    for (let l = 0; l < m; l++) {
      const hl = Float64Array.from({ length: d }, (_, i) => at(l, t, i));
      ks.push(linear(hl, 1, P("key.weight"), P("key.bias"), d, d));
      vs.push(linear(hl, 1, P("value.weight"), P("value.bias"), d, d));
    }
    const sc = ks.map((k) => k.reduce((s, v, i) => s + v * q[i], 0) / Math.sqrt(d));
    const mx = Math.max(...sc);
    const ex = sc.map((v) => Math.exp(v - mx));
    const z = ex.reduce((a, b) => a + b, 0);
    const ctx = new Float64Array(d);
    for (let l = 0; l < m; l++) for (let i = 0; i < d; i++) ctx[i] += (ex[l] / z) * vs[l][i];
    out.set(linear(ctx, 1, P("output.weight"), P("output.bias"), d, d), t * d);
  }
  return out;
}

/** Token scores for N tokens; with `dropoutSeed` the masks of native training mode (p = 0.1). */
export function guardReference(
  agg: Aggregation, h: Float64Array, ids: ArrayLike<number>, m: number, d: number, p: Params, dropoutSeed?: number,
): Float64Array {
  const N = ids.length;
  const a = aggregate(agg, h, m, N, d, p);
  const dz = d + E;
  const z = new Float64Array(N * dz);
  for (let t = 0; t < N; t++) {
    z.set(a.subarray(t * d, (t + 1) * d), t * dz);
    z.set(p["analyzer.token_embedding.weight"].subarray(ids[t] * E, (ids[t] + 1) * E), t * dz + d);
  }
  const A = (n: string) => p[`analyzer.${n}`];
  const drop = (x: Float64Array, stream: number) => {
    if (dropoutSeed === undefined) return x;
    const mask = dropoutMask(x.length, 0.1, dropoutSeed, stream);
    return x.map((v, i) => (mask[i] ? v / 0.9 : 0));
  };
  let x = drop(relu(layernorm(linear(z, N, A("fc1.weight"), A("fc1.bias"), H1, dz), N, H1, A("ln1.weight"), A("ln1.bias"))), 1);
  x = drop(relu(layernorm(linear(x, N, A("fc2.weight"), A("fc2.bias"), H2, H1), N, H2, A("ln2.weight"), A("ln2.bias"))), 2);
  x = relu(linear(x, N, A("fc3.weight"), A("fc3.bias"), H3, H2));
  const logit = linear(x, N, A("fc4.weight"), A("fc4.bias"), 1, H3);
  return logit.map((v) => 1 / (1 + Math.exp(-v)));
}
