// linear_backward against a float64 reference on every ISA, for the GEMV path
// (T <= 4) and the transposed-GEMM path, F32 and BF16 weights, at odd sizes; the
// gradients are also checked by finite differences of the float64 forward.
import { test } from "uvu";
import * as assert from "uvu/assert";
import { native } from "../../lib/native.js";
import { relativeError } from "../support/compare.js";
import { expectError } from "../support/expect.js";
import { rng } from "../support/random.js";

interface Ops {
  linearBackward(
    dy: Float32Array, x: Float32Array, T: number, wBytes: Uint8Array, dtype: "F32" | "BF16", rows: number, cols: number,
    dx: Float32Array | null, dw: Float32Array | null, db: Float32Array | null,
  ): void;
  cpuInfo(): { best: string; active: string };
  setIsa(isa: string): void;
}
const ops = (native() as unknown as { testing: Ops }).testing;
const ALL = ["scalar", "avx2", "avx512"];
const ISAS = ALL.slice(0, ALL.indexOf(ops.cpuInfo().best) + 1);

/** Seeded floats in [-0.5, 0.5). */
function centered(seed: number): () => number {
  const r = rng(seed);
  return () => r() - 0.5;
}
const randomF32 = (n: number, r: () => number) => Float32Array.from({ length: n }, r);

/** Weights as bytes; BF16 keeps the top half of each f32 (exactly representable values). */
function weights(w: Float32Array, dtype: "F32" | "BF16"): { bytes: Uint8Array; exact: Float64Array } {
  if (dtype === "F32") return { bytes: new Uint8Array(w.slice().buffer), exact: Float64Array.from(w) };
  const u = new Uint32Array(w.slice().buffer);
  const h = new Uint16Array(w.length);
  const exact = new Float64Array(w.length);
  for (let i = 0; i < w.length; i++) {
    h[i] = u[i] >>> 16;
    exact[i] = new Float32Array(new Uint32Array([h[i] << 16]).buffer)[0];
  }
  return { bytes: new Uint8Array(h.buffer), exact };
}

function reference(dy: Float32Array, x: Float32Array, w: Float64Array, T: number, rows: number, cols: number) {
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
  return { dx, dw, db };
}

test("linear_backward matches the float64 reference and accumulates", () => {
  const r = centered(7);
  try {
    for (const isa of ISAS) {
      ops.setIsa(isa);
      for (const dtype of ["F32", "BF16"] as const)
        for (const [T, rows, cols] of [[1, 5, 7], [3, 33, 17], [4, 64, 130], [9, 37, 70], [70, 21, 45]]) {
          const dy = randomF32(T * rows, r), x = randomF32(T * cols, r);
          const { bytes, exact } = weights(randomF32(rows * cols, r), dtype);
          const init = { dx: randomF32(T * cols, r), dw: randomF32(rows * cols, r), db: randomF32(rows, r) };
          const dx = init.dx.slice(), dw = init.dw.slice(), db = init.db.slice();
          ops.linearBackward(dy, x, T, bytes, dtype, rows, cols, dx, dtype === "F32" ? dw : null, db);
          const ref = reference(dy, x, exact, T, rows, cols);
          const plus = (a: Float32Array, b: Float64Array) => Float64Array.from(b, (v, i) => v + a[i]);
          const at = `${isa} ${dtype} T=${T} ${rows}x${cols}`;
          assert.ok(relativeError(dx, plus(init.dx, ref.dx)) < 1e-5, `dx ${at}`);
          assert.ok(relativeError(db, plus(init.db, ref.db)) < 1e-5, `db ${at}`);
          if (dtype === "F32") assert.ok(relativeError(dw, plus(init.dw, ref.dw)) < 1e-5, `dw ${at}`);
          else assert.equal(dw, init.dw, "skipped dw untouched");
        }
    }
  } finally {
    ops.setIsa(ISAS[ISAS.length - 1]);
  }
});

test("linear_backward: finite differences of loss = sum(g * (x W^T + b))", () => {
  const r = centered(3);
  const T = 6, rows = 5, cols = 4;
  const x = randomF32(T * cols, r), w = randomF32(rows * cols, r), b = randomF32(rows, r), g = randomF32(T * rows, r);
  const loss = (xx: Float64Array, ww: Float64Array, bb: Float64Array) => {
    let s = 0;
    for (let t = 0; t < T; t++)
      for (let o = 0; o < rows; o++) {
        let y = bb[o];
        for (let i = 0; i < cols; i++) y += xx[t * cols + i] * ww[o * cols + i];
        s += g[t * rows + o] * y;
      }
    return s;
  };
  const dx = new Float32Array(T * cols), dw = new Float32Array(rows * cols), db = new Float32Array(rows);
  ops.linearBackward(g, x, T, new Uint8Array(w.slice().buffer), "F32", rows, cols, dx, dw, db);
  const base = [Float64Array.from(x), Float64Array.from(w), Float64Array.from(b)];
  const grads = [dx, dw, db];
  const h = 1e-6;
  base.forEach((p, k) => {
    for (let i = 0; i < p.length; i++) {
      const args = base.map((a) => a.slice()) as [Float64Array, Float64Array, Float64Array];
      args[k][i] += h;
      const up = loss(...args);
      args[k][i] -= 2 * h;
      const fd = (up - loss(...args)) / (2 * h);
      assert.ok(Math.abs(fd - grads[k][i]) < 1e-4, `param ${k}[${i}]: ${fd} vs ${grads[k][i]}`);
    }
  });
});

test("linear_backward: wrong lengths are ERR_ARGUMENT", async () => {
  const f = new Float32Array(6), x = new Float32Array(4);
  await expectError(() => ops.linearBackward(f, x, 2, new Uint8Array(24), "F32", 3, 2, new Float32Array(5), null, null), "ERR_ARGUMENT", /dx/);
  await expectError(() => ops.linearBackward(f, x, 2, new Uint8Array(12), "BF16", 3, 2, null, new Float32Array(6), null), "ERR_ARGUMENT", /F32/);
});

test.run();
