// Every backward kernel against a float64 reference: the exact adjoint for the
// linear ones (on every ISA and weight dtype, at sizes that hit the SIMD column
// tails and token-tile tails), and central finite differences of a float64
// forward for the nonlinear ones (loss = sum G * f(x) for a random G).
import { test } from "uvu";
import * as assert from "uvu/assert";
import { decodeTensor, encodeTensor } from "../../lib/io/dtype.js";
import { native } from "../../lib/native.js";
import { Random } from "../../lib/random.js";
import { relativeError } from "../support/compare.js";

type F32 = Float32Array;
interface Ops {
  cpuInfo(): { best: string; active: string };
  setIsa(isa: string): void;
  linearBackward(dy: F32, x: F32, T: number, w: Uint8Array, dtype: string, rows: number, cols: number, dx: F32 | null, dw: F32 | null, db: F32 | null): void;
  rmsnormBackward(dy: F32, x: F32, w: F32, T: number, d: number, eps: number): { dx: F32; dw: F32 };
  ropeBackward(dy: F32, cos: F32, sin: F32, T: number, H: number, hd: number): F32;
  attentionBackward(dout: F32, q: F32, k: F32, v: F32, T: number, H: number, KV: number, hd: number): { dq: F32; dk: F32; dv: F32 };
  swigluBackward(dout: F32, gate: F32, up: F32): { dgate: F32; dup: F32 };
  embeddingBackward(dout: F32, ids: Int32Array, rows: number, d: number): F32;
  crossEntropy(logits: F32, targets: Int32Array, weights: F32, T: number, V: number): { loss: number; dlogits: F32; fusedLoss: number; fusedDlogits: F32 };
  kl(base: F32, logits: F32, weights: F32, T: number, V: number): { loss: number; dlogits: F32 };
}
const ops = (native() as unknown as { testing: Ops }).testing;
const ISAS = ["scalar", "avx2", "avx512"].slice(0, ["scalar", "avx2", "avx512"].indexOf(ops.cpuInfo().best) + 1);
const rng = new Random(42);
const rand = (n: number, scale = 1) => Float32Array.from({ length: n }, () => (rng.nextDouble() * 2 - 1) * scale);

/** d/dx of sum(G * f(x)) by central differences in float64, for every element of x. */
function numericGrad(f: (x: Float64Array) => Float64Array, x: ArrayLike<number>, G: ArrayLike<number>, h = 1e-5): Float64Array {
  const xx = Float64Array.from(x);
  const out = new Float64Array(xx.length);
  const dot = (y: Float64Array) => y.reduce((s, v, i) => s + v * G[i], 0);
  for (let i = 0; i < xx.length; i++) {
    const keep = xx[i];
    xx[i] = keep + h;
    const up = dot(f(xx));
    xx[i] = keep - h;
    const down = dot(f(xx));
    xx[i] = keep;
    out[i] = (up - down) / (2 * h);
  }
  return out;
}

test("linear_backward: dx = dy W (every ISA and dtype), dw = dy^T x, db = sum dy", () => {
  const start = ops.cpuInfo().active;
  try {
    for (const isa of ISAS) {
      ops.setIsa(isa);
      for (const dtype of ["F32", "BF16", "F16"]) {
        for (const [T, rows, cols] of [[1, 5, 3], [7, 37, 70], [13, 300, 133], [20, 64, 64]]) {
          const wBytes = encodeTensor(rand(rows * cols), dtype);
          const w = decodeTensor(wBytes, dtype);
          const dy = rand(T * rows), x = rand(T * cols);
          const r = { dx: new Float32Array(T * cols), dw: new Float32Array(rows * cols), db: new Float32Array(rows) };
          ops.linearBackward(dy, x, T, wBytes, dtype, rows, cols, r.dx, dtype === "F32" ? r.dw : null, r.db);
          const dx = new Float64Array(T * cols), dw = new Float64Array(rows * cols), db = new Float64Array(rows);
          for (let t = 0; t < T; t++)
            for (let o = 0; o < rows; o++) {
              const g = dy[t * rows + o];
              db[o] += g;
              for (let i = 0; i < cols; i++) {
                dx[t * cols + i] += g * w[o * cols + i];
                dw[o * cols + i] += g * x[t * cols + i];
              }
            }
          const what = `${isa} ${dtype} T=${T} ${rows}x${cols}`;
          assert.ok(relativeError(r.dx, dx) < 1e-5, `dx ${what}: ${relativeError(r.dx, dx)}`);
          if (dtype === "F32") assert.ok(relativeError(r.dw, dw) < 1e-5, `dw ${what}`);
          assert.ok(relativeError(r.db, db) < 1e-5, `db ${what}`);
        }
      }
    }
  } finally {
    ops.setIsa(start);
  }
});

test("rmsnorm_backward matches finite differences (dx and dw)", () => {
  const T = 3, d = 11, eps = 1e-5;
  const x = rand(T * d), w = rand(d), G = rand(T * d);
  const f = (xx: Float64Array, ww: ArrayLike<number>) => {
    const y = new Float64Array(T * d);
    for (let t = 0; t < T; t++) {
      let s = 0;
      for (let i = 0; i < d; i++) s += xx[t * d + i] ** 2;
      const r = 1 / Math.sqrt(s / d + eps);
      for (let i = 0; i < d; i++) y[t * d + i] = xx[t * d + i] * r * ww[i];
    }
    return y;
  };
  const r = ops.rmsnormBackward(G, x, w, T, d, eps);
  assert.ok(relativeError(r.dx, numericGrad((xx) => f(xx, w), x, G)) < 1e-4, "dx");
  assert.ok(relativeError(r.dw, numericGrad((ww) => f(Float64Array.from(x), ww), w, G)) < 1e-4, "dw");
});

test("rope_backward is the transposed rotation", () => {
  const T = 3, H = 2, hd = 6, half = 3;
  const cos = new Float32Array(T * half), sin = new Float32Array(T * half);
  for (let t = 0; t < T; t++) for (let i = 0; i < half; i++) { const a = t * 10000 ** (-i / half); cos[t * half + i] = Math.cos(a); sin[t * half + i] = Math.sin(a); }
  const x = rand(T * H * hd), G = rand(T * H * hd);
  const f = (xx: Float64Array) => {
    const y = Float64Array.from(xx);
    for (let t = 0; t < T; t++) for (let h = 0; h < H; h++) for (let i = 0; i < half; i++) {
      const o = (t * H + h) * hd, a = xx[o + i], b = xx[o + half + i], c = cos[t * half + i], s = sin[t * half + i];
      y[o + i] = a * c - b * s;
      y[o + half + i] = b * c + a * s;
    }
    return y;
  };
  assert.ok(relativeError(ops.ropeBackward(G, cos, sin, T, H, hd), numericGrad(f, x, G)) < 1e-6);
});

test("attention_backward (causal, GQA) matches finite differences for q, k and v", () => {
  const T = 5, H = 4, KV = 2, hd = 3, g = H / KV;
  const q = rand(T * H * hd), k = rand(KV * T * hd), v = rand(KV * T * hd), G = rand(T * H * hd);
  const attend = (qq: ArrayLike<number>, kk: ArrayLike<number>, vv: ArrayLike<number>) => {
    const out = new Float64Array(T * H * hd);
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / g);
      for (let t = 0; t < T; t++) {
        const s: number[] = [];
        for (let j = 0; j <= t; j++) {
          let d = 0;
          for (let i = 0; i < hd; i++) d += qq[(t * H + h) * hd + i] * kk[(kvh * T + j) * hd + i];
          s.push(d / Math.sqrt(hd));
        }
        const m = Math.max(...s), e = s.map((x) => Math.exp(x - m)), z = e.reduce((a, b) => a + b, 0);
        for (let j = 0; j <= t; j++) for (let i = 0; i < hd; i++) out[(t * H + h) * hd + i] += (e[j] / z) * vv[(kvh * T + j) * hd + i];
      }
    }
    return out;
  };
  const r = ops.attentionBackward(G, q, k, v, T, H, KV, hd);
  assert.ok(relativeError(r.dq, numericGrad((x) => attend(x, k, v), q, G)) < 1e-4, "dq");
  assert.ok(relativeError(r.dk, numericGrad((x) => attend(q, x, v), k, G)) < 1e-4, "dk");
  assert.ok(relativeError(r.dv, numericGrad((x) => attend(q, k, x), v, G)) < 1e-4, "dv");
});

test("swiglu_backward and embedding_backward match their references", () => {
  const n = 17, gate = rand(n, 4), up = rand(n), G = rand(n);
  const f = (gg: ArrayLike<number>, uu: ArrayLike<number>) => Float64Array.from({ length: n }, (_, i) => (gg[i] / (1 + Math.exp(-gg[i]))) * uu[i]);
  const r = ops.swigluBackward(G, gate, up);
  assert.ok(relativeError(r.dgate, numericGrad((x) => f(x, up), gate, G)) < 1e-5, "dgate");
  assert.ok(relativeError(r.dup, numericGrad((x) => f(gate, x), up, G)) < 1e-5, "dup");
  const d = 4, ids = Int32Array.from([2, 0, 2, 5]), dout = rand(ids.length * d);
  const want = new Float64Array(6 * d);
  ids.forEach((id, t) => { for (let i = 0; i < d; i++) want[id * d + i] += dout[t * d + i]; });
  assert.ok(relativeError(ops.embeddingBackward(dout, ids, 6, d), want) < 1e-7, "embedding");
});

test("cross-entropy and KL: losses and gradients match float64 finite differences", () => {
  const T = 4, V = 37;
  const z = rand(T * V, 3), zb = rand(T * V, 3), w = Float32Array.from([1, 0.5, 0, 2]);
  const targets = Int32Array.from([3, -1, 7, 36]);
  const lsm = (zz: ArrayLike<number>, t: number) => {
    let m = -Infinity;
    for (let i = 0; i < V; i++) m = Math.max(m, zz[t * V + i]);
    let s = 0;
    for (let i = 0; i < V; i++) s += Math.exp(zz[t * V + i] - m);
    return Array.from({ length: V }, (_, i) => zz[t * V + i] - m - Math.log(s));
  };
  const ce = (zz: ArrayLike<number>) => {
    let l = 0;
    for (let t = 0; t < T; t++) if (targets[t] >= 0) l += w[t] * -lsm(zz, t)[targets[t]];
    return Float64Array.of(l);
  };
  const kl = (zz: ArrayLike<number>) => {
    let l = 0;
    for (let t = 0; t < T; t++) {
      const a = lsm(zb, t), b = lsm(zz, t);
      for (let i = 0; i < V; i++) l += w[t] * Math.exp(a[i]) * (a[i] - b[i]);
    }
    return Float64Array.of(l);
  };
  const c = ops.crossEntropy(z, targets, w, T, V);
  assert.ok(Math.abs(c.loss - ce(z)[0]) < 1e-5 * Math.abs(ce(z)[0]), "CE loss");
  assert.ok(relativeError(c.dlogits, numericGrad(ce, z, [1])) < 1e-5, "CE grad");
  assert.ok(Math.abs(c.fusedLoss - ce(z)[0]) < 1e-5 * Math.abs(ce(z)[0]), "fused CE loss");
  assert.ok(relativeError(c.fusedDlogits, numericGrad(ce, z, [1])) < 1e-5, "fused CE grad");
  const k = ops.kl(zb, z, w, T, V);
  assert.ok(Math.abs(k.loss - kl(z)[0]) < 1e-5 * Math.abs(kl(z)[0]), "KL loss");
  assert.ok(relativeError(k.dlogits, numericGrad(kl, z, [1])) < 1e-5, "KL grad");
  assert.ok(Math.abs(ops.kl(z, z, w, T, V).loss) < 1e-6, "KL(p || p) = 0");
});

test.run();
