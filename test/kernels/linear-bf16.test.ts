// linear_forward with bf16_activations on BF16 weights (Model.load's
// `activations: "bfloat16"`): against a float64 reference of
// sum_k bf16(x[t][k]) * W[r][k] (x rounded in TypeScript, nearest even) on every
// ISA, with AMX on and off, at odd row / column / token counts; and the AMX
// path's batch and thread invariance, bit for bit (from 4 tokens on; a single
// token runs the AVX-512 kernel on the same rounded values).
//
// Tolerance: every product bf16(x) * w of two BF16 values (8-bit significands)
// is exact in f32, so the only error is the f32 accumulation over K products
// plus the bias and accumulateInto additions. In any summation order, n
// additions of f32 values err by at most n * 2^-24 * (sum of the magnitudes
// involved) (to first order), whence the per-element bound
//   |y - ref| <= (K + 2) * 2^-24 * (sum_k |bf16(x_k) w_k| + |b| + |y0|).
// Using x unrounded instead errs by ~2^-9 * |x_k w_k| per term (~sqrt(K) *
// 2^-10 relative in a random sum), far above this bound: the test checks that
// too, so it cannot pass on f32 activations. Inputs stay normal (AMX flushes
// denormals to zero, the rounding fallback does not).
import { spawnSync } from "node:child_process";
import { resolve } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { native } from "../../lib/native.js";
import { expectError } from "../support/expect.js";
import { rng } from "../support/random.js";

interface Ops {
  linear(
    x: Float32Array,
    T: number,
    wBytes: Uint8Array,
    dtype: "BF16" | "F32",
    rows: number,
    cols: number,
    bias: Float32Array | null,
    accumulateInto: Float32Array | null,
    bf16Activations?: boolean,
  ): Float32Array;
  cpuInfo(): { best: string; active: string; threads: number };
  setIsa(isa: string): void;
  quantInfo(): { amx: boolean };
  setAmx(enabled: boolean): void;
}
const ops = (native() as unknown as { testing: Ops }).testing;
const ALL_ISAS = ["scalar", "avx2", "avx512"];
const startIsa = ops.cpuInfo().active;
const ISAS = ALL_ISAS.slice(0, ALL_ISAS.indexOf(ops.cpuInfo().best) + 1);
ops.setAmx(true);
/** Whether this CPU runs AMX (on avx512, not turned off by DEEPGUARD_AMX=0). */
const AMX = ISAS.includes("avx512") && (ops.setIsa("avx512"), ops.quantInfo().amx);
ops.setIsa(startIsa);

/** Every (isa, amx) pair this CPU can run; AMX only exists on avx512. */
function forEachPath(fn: (path: string) => void): void {
  try {
    for (const isa of ISAS) {
      ops.setIsa(isa);
      for (const amx of isa === "avx512" && AMX ? [false, true] : [false]) {
        ops.setAmx(amx);
        assert.is(ops.quantInfo().amx, amx, `${isa}: AMX ${amx ? "on" : "off"} as asked`);
        fn(`${isa}${amx ? "+amx" : ""}`);
      }
    }
  } finally {
    ops.setIsa(startIsa);
    ops.setAmx(true);
  }
}

/** Values in +-[0.05, 1) * scale: normal, none tiny. */
function randomF32(n: number, rand: () => number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => (rand() < 0.5 ? -1 : 1) * (0.05 + 0.95 * rand()) * scale);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
/** The BF16 bits nearest v (ties to even). */
function bf16Bits(v: number): number {
  f32[0] = v;
  const x = u32[0];
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}
function bf16Value(h: number): number {
  u32[0] = h << 16;
  return f32[0];
}
const roundBf16 = (v: number): number => bf16Value(bf16Bits(v));

/** BF16 bytes of w (little endian) and the values they hold. */
function encodeBf16(w: Float32Array): { bytes: Uint8Array; exact: Float64Array } {
  const bytes = new Uint8Array(w.length * 2);
  const view = new DataView(bytes.buffer);
  const exact = new Float64Array(w.length);
  w.forEach((v, i) => {
    const h = bf16Bits(v);
    view.setUint16(i * 2, h, true);
    exact[i] = bf16Value(h);
  });
  return { bytes, exact };
}

/** The float64 value and the error bound of each output element (see the top of the file). */
function reference(
  x: Float32Array,
  T: number,
  w: Float64Array,
  rows: number,
  cols: number,
  bias: Float32Array | null,
  initial: Float32Array | null,
  round: boolean,
): { y: Float64Array; bound: Float64Array } {
  const xr = round ? Float64Array.from(x, roundBf16) : Float64Array.from(x);
  const y = new Float64Array(T * rows);
  const bound = new Float64Array(T * rows);
  for (let t = 0; t < T; t++) {
    for (let r = 0; r < rows; r++) {
      let s = 0;
      let mag = 0;
      for (let k = 0; k < cols; k++) {
        const p = xr[t * cols + k] * w[r * cols + k];
        s += p;
        mag += Math.abs(p);
      }
      const b = bias ? bias[r] : 0;
      const y0 = initial ? initial[t * rows + r] : 0;
      y[t * rows + r] = s + b + y0;
      bound[t * rows + r] = (cols + 2) * 2 ** -24 * (mag + Math.abs(b) + Math.abs(y0)) * 1.0001;
    }
  }
  return { y, bound };
}

const ROWS = [1, 5, 15, 16, 17, 33, 100];
const COLS = [32, 64, 96, 800, 72]; // 72: not whole 32-column blocks (the f32 kernels on rounded x)
const TOKENS = [1, 2, 15, 16, 17, 33, 40];

test("BF16 activations match sum_k bf16(x) w on every ISA, AMX on and off, at odd sizes, with bias and accumulate", () => {
  const rand = rng(7);
  let i = 0;
  let discriminated = 0;
  let elements = 0;
  let checked = 0;
  for (const cols of COLS) {
    for (const rows of ROWS) {
      const { bytes, exact } = encodeBf16(randomF32(rows * cols, rand));
      // Every token count with this matrix; bias / accumulate cycle through all four combinations.
      for (const T of TOKENS) {
        const x = randomF32(T * cols, rand, 2);
        const bias = i % 2 === 1 ? randomF32(rows, rand) : null;
        const initial = i % 4 >= 2 ? randomF32(T * rows, rand) : null;
        i++;
        const ref = reference(x, T, exact, rows, cols, bias, initial, true);
        const unrounded = reference(x, T, exact, rows, cols, bias, initial, false).y;
        for (let e = 0; e < ref.y.length; e++) if (Math.abs(unrounded[e] - ref.y[e]) > ref.bound[e]) discriminated++;
        elements += ref.y.length;
        forEachPath((path) => {
          const y = ops.linear(x, T, bytes, "BF16", rows, cols, bias, initial ? initial.slice() : null, true);
          for (let e = 0; e < y.length; e++) {
            const err = Math.abs(y[e] - ref.y[e]);
            if (!(err <= ref.bound[e]))
              assert.unreachable(`${path} T=${T} ${rows}x${cols}: element ${e} is ${y[e]}, reference ${ref.y[e]} (bound ${ref.bound[e]})`);
          }
          checked += y.length;
        });
      }
    }
  }
  assert.is(checked, elements * (ISAS.length + (AMX ? 1 : 0)));
  // The bound is tight enough that f32 (unrounded) activations would fail it
  // for most elements (88% here; fewer at K = 32, where rounding errors cancel less often).
  assert.ok(discriminated > 0.8 * elements, `only ${discriminated} of ${elements} elements tell bf16(x) from x`);
});

test("without the flag BF16 weights multiply f32 activations (the flag is what rounds)", () => {
  const rand = rng(8);
  const [T, rows, cols] = [17, 33, 96];
  const { bytes, exact } = encodeBf16(randomF32(rows * cols, rand));
  const x = randomF32(T * cols, rand, 2);
  const ref = reference(x, T, exact, rows, cols, null, null, false);
  forEachPath((path) => {
    for (const flag of [false, undefined]) {
      const y = ops.linear(x, T, bytes, "BF16", rows, cols, null, null, flag);
      // The f32 kernels may round products; 1e-5 of the scale, as in kernels.test.ts.
      const scale = ref.y.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      for (let e = 0; e < y.length; e++) assert.ok(Math.abs(y[e] - ref.y[e]) <= 1e-5 * scale, `${path} flag=${flag} at ${e}`);
    }
  });
  // F32 weights ignore the flag: bit-identical with and without it.
  const wf = randomF32(rows * cols, rand);
  const fb = new Uint8Array(wf.buffer.slice(0));
  const a = ops.linear(x, T, fb, "F32", rows, cols, null, null, false);
  const b = ops.linear(x, T, fb, "F32", rows, cols, null, null, true);
  assert.equal(Array.from(new Uint32Array(b.buffer)), Array.from(new Uint32Array(a.buffer)));
});

/** Bits of a Float32Array, for exact comparison (NaN-safe, -0 distinct). */
const bits = (a: Float32Array): number[] => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

test("with AMX each token's row is bit-identical in calls of 4, 17 and 40 tokens; alone (AVX-512) within f32 summation", () => {
  if (!AMX) return;
  const rand = rng(9);
  ops.setIsa("avx512");
  ops.setAmx(true);
  try {
    for (const [rows, cols] of [
      [5, 64],
      [17, 800],
      [100, 96],
      [33, 32],
    ]) {
      const { bytes, exact: w } = encodeBf16(randomF32(rows * cols, rand));
      const bias = randomF32(rows, rand);
      const x = randomF32(40 * cols, rand, 2);
      const all = ops.linear(x, 40, bytes, "BF16", rows, cols, bias, null, true);
      const part = ops.linear(x.subarray(23 * cols), 17, bytes, "BF16", rows, cols, bias, null, true);
      for (let t0 = 0; t0 < 40; t0 += 4) {
        // 4 tokens: the fewest that take the tiles (kAmxBf16Tokens).
        const four = ops.linear(x.slice(t0 * cols, (t0 + 4) * cols), 4, bytes, "BF16", rows, cols, bias, null, true);
        for (let t = t0; t < t0 + 4; t++) {
          const mine = four.subarray((t - t0) * rows, (t - t0 + 1) * rows);
          assert.equal(bits(all.subarray(t * rows, (t + 1) * rows)), bits(mine), `${rows}x${cols}: token ${t} in 4 vs in 40`);
          if (t >= 23) assert.equal(bits(part.subarray((t - 23) * rows, (t - 22) * rows)), bits(mine), `${rows}x${cols}: token ${t} in 17`);
          // One token alone runs the AVX-512 kernel on the same rounded values:
          // only the f32 summation order differs.
          const xr = x.slice(t * cols, (t + 1) * cols);
          const one = ops.linear(xr, 1, bytes, "BF16", rows, cols, bias, null, true);
          for (let r = 0; r < rows; r++) {
            let mag = Math.abs(bias[r]);
            for (let k = 0; k < cols; k++) mag += Math.abs(roundBf16(xr[k]) * w[r * cols + k]);
            const tol = 2 * (cols + 2) * 2 ** -24 * mag;
            assert.ok(Math.abs(one[r] - mine[r]) <= tol, `${rows}x${cols}: token ${t} row ${r} alone ${one[r]} vs tiles ${mine[r]} (tol ${tol})`);
          }
        }
      }
    }
  } finally {
    ops.setIsa(startIsa);
  }
});

test("with AMX results are bit-identical with DEEPGUARD_THREADS=1 and 2", () => {
  if (!AMX) return;
  // A child per thread count (the pool is sized at start): rows split across
  // threads in 4-row groups land mid-tile, and tiles near the end start early.
  const script = `
    import { native } from ${JSON.stringify(resolve("dist/lib/native.js"))};
    import { createHash } from "node:crypto";
    const ops = native().testing;
    let a = 12345;
    const next = () => ((a = (Math.imul(a, 1664525) + 1013904223) >>> 0) / 4294967296);
    const h = createHash("sha256");
    for (const [T, rows, cols] of [[1, 301, 256], [40, 301, 256], [17, 99, 800]]) {
      const x = Float32Array.from({ length: T * cols }, () => (next() - 0.5) * 4);
      const w = new Uint16Array(rows * cols).map(() => 0x3c00 + Math.floor(next() * 0x800) + (next() < 0.5 ? 0x8000 : 0));
      const y = ops.linear(x, T, new Uint8Array(w.buffer), "BF16", rows, cols, null, null, true);
      h.update(new Uint8Array(y.buffer));
    }
    process.stdout.write(JSON.stringify({ threads: ops.cpuInfo().threads, amx: ops.quantInfo().amx, hash: h.digest("hex") }));`;
  const run = (threads: string) => {
    const res = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
      encoding: "utf8",
      env: { ...process.env, DEEPGUARD_THREADS: threads, DEEPGUARD_ISA: "avx512" },
    });
    assert.is(res.status, 0, res.stderr);
    return JSON.parse(res.stdout) as { threads: number; amx: boolean; hash: string };
  };
  const one = run("1");
  const two = run("2");
  assert.is(one.threads, 1);
  assert.is(two.threads, 2);
  assert.ok(one.amx && two.amx);
  assert.is(two.hash, one.hash);
});

test("bf16Activations must be a boolean", async () => {
  const x = new Float32Array(32);
  const w = new Uint8Array(64);
  const untyped = ops.linear as unknown as (...args: unknown[]) => unknown;
  await expectError(() => untyped(x, 1, w, "BF16", 1, 32, null, null, "yes"), "ERR_ARGUMENT", /bf16Activations/);
});

test.run();
