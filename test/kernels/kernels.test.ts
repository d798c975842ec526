// Every CPU kernel against an independent float64 reference written with plain
// loops, on every ISA this CPU can run, for each weight dtype, at odd sizes
// that exercise the SIMD tails, row tails, token tiles and the thread split.
import { test } from "uvu";
import * as assert from "uvu/assert";
import { native } from "../../lib/native.js";
import { relativeError } from "../support/compare.js";
import { expectError } from "../support/expect.js";
import { rng } from "../support/random.js";

type DType = "F32" | "F16" | "BF16";
interface SamplingOptions {
  temperature?: number;
  topK?: number;
  topP?: number;
}
interface TestingOps {
  linearMany(x: Float32Array, T: number, cols: number, weights: { bytes: Uint8Array; dtype: DType; rows: number }[]): Float32Array[];
  linear(
    x: Float32Array,
    T: number,
    wBytes: Uint8Array,
    dtype: DType,
    rows: number,
    cols: number,
    bias: Float32Array | null,
    accumulateInto: Float32Array | null,
  ): Float32Array;
  rmsnorm(x: Float32Array, w: Float32Array, T: number, d: number, eps: number): Float32Array;
  ropeTables(positions: Float64Array, invFreq: Float32Array): { cos: Float32Array; sin: Float32Array };
  rope(x: Float32Array, cos: Float32Array, sin: Float32Array, T: number, nHeads: number, headDim: number): Float32Array;
  /** kCache / vCache: Float32Array (an F32 cache) or Uint16Array of BF16 bits (a BF16 cache). */
  attention(
    q: Float32Array,
    kCache: Float32Array | Uint16Array,
    vCache: Float32Array | Uint16Array,
    capacity: number,
    T: number,
    pos0: number,
    nHeads: number,
    nKvHeads: number,
    headDim: number,
  ): Float32Array;
  swiglu(gate: Float32Array, up: Float32Array): Float32Array;
  addInplace(y: Float32Array, x: Float32Array): Float32Array;
  embedding(ids: Int32Array, table: Uint8Array, dtype: DType, rows: number, cols: number): Float32Array;
  cpuInfo(): { best: string; active: string; threads: number; avx2: boolean; avx512f: boolean };
  setIsa(isa: string): void;
}

const ops = (native() as unknown as { testing: TestingOps }).testing;
// Sampling is public API: tested through the same entry point generate() uses.
const sampleToken = native().sampleToken;
const untypedSample = native().sampleToken as unknown as (...args: unknown[]) => number;
/** The same functions, for calls with deliberately wrong argument types. */
const untyped = ops as unknown as Record<string, (...args: unknown[]) => unknown>;
const TOL = 1e-5;

const ALL_ISAS = ["scalar", "avx2", "avx512"];
const startIsa = ops.cpuInfo().active;
const ISAS = ALL_ISAS.slice(0, ALL_ISAS.indexOf(ops.cpuInfo().best) + 1);
const DTYPES: DType[] = ["F32", "F16", "BF16"];

function forEachIsa(fn: (isa: string) => void): void {
  try {
    for (const isa of ISAS) {
      ops.setIsa(isa);
      fn(isa);
    }
  } finally {
    ops.setIsa(startIsa);
  }
}

/** The call throws ERR_ARGUMENT (a JS error, not a crash) with a message matching `message`. */
function rejects(fn: () => unknown, message?: RegExp): Promise<Error> {
  return expectError(fn, "ERR_ARGUMENT", message);
}

function randomF32(n: number, rand: () => number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => (rand() * 2 - 1) * scale);
}

// ---- dtype encoding, written here independently of lib/io ----------------------

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

function bf16Bits(v: number): number {
  f32[0] = v;
  const x = u32[0];
  if ((x & 0x7fffffff) > 0x7f800000) return (x >>> 16) | 0x40; // quiet NaN
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff; // round to nearest even
}
function bf16Value(h: number): number {
  u32[0] = h << 16;
  return f32[0];
}

function f16Bits(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let man = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (man ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  let shift = 13;
  let h: number;
  if (e <= 0) {
    if (e < -10) return sign;
    man |= 0x800000; // subnormal: make the implicit bit explicit and shift further
    shift = 14 - e;
    h = man >>> shift;
  } else {
    h = (e << 10) | (man >>> 13);
  }
  const rem = man & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && h & 1)) h += 1; // a carry into the exponent is still right
  return sign | h;
}
function f16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 31;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/**
 * Encodes values in `dtype` into a Uint8Array starting `offset` bytes into its
 * buffer (offset 1 makes the weights unaligned, as in an mmap'd file), and
 * returns the values the encoding actually holds, for the reference.
 */
function encode(values: Float32Array, dtype: DType, offset = 0): { bytes: Uint8Array; exact: Float64Array } {
  const size = dtype === "F32" ? 4 : 2;
  const bytes = new Uint8Array(new ArrayBuffer(values.length * size + offset), offset, values.length * size);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const exact = new Float64Array(values.length);
  values.forEach((v, i) => {
    if (dtype === "F32") {
      view.setFloat32(i * 4, v, true);
      exact[i] = v;
    } else {
      const h = dtype === "F16" ? f16Bits(v) : bf16Bits(v);
      view.setUint16(i * 2, h, true);
      exact[i] = dtype === "F16" ? f16Value(h) : bf16Value(h);
    }
  });
  return { bytes, exact };
}

test("dtype encoders round to nearest even and decode exactly", () => {
  assert.is(bf16Bits(1), 0x3f80);
  assert.is(bf16Bits(1 + 2 ** -8), 0x3f80); // tie: keep the even mantissa
  assert.is(bf16Bits(1 + 3 * 2 ** -8), 0x3f82); // tie: round up to even
  assert.is(f16Bits(1), 0x3c00);
  assert.is(f16Bits(1 + 2 ** -11), 0x3c00);
  assert.is(f16Bits(1 + 3 * 2 ** -11), 0x3c02);
  assert.is(f16Bits(2 ** -24), 0x0001); // smallest subnormal
  assert.is(f16Bits(65520), 0x7c00); // rounds past the largest finite value
  assert.is(f16Value(0x3555), 0.333251953125);
  assert.is(f16Value(0x03ff), 1023 * 2 ** -24);
});

// ---- linear -----------------------------------------------------------------------

function linearReference(
  x: Float32Array,
  T: number,
  w: Float64Array,
  rows: number,
  cols: number,
  bias: Float32Array | null,
  initial: Float32Array | null,
): Float64Array {
  const y = new Float64Array(T * rows);
  for (let t = 0; t < T; t++) {
    for (let r = 0; r < rows; r++) {
      let s = initial ? initial[t * rows + r] : 0;
      if (bias) s += bias[r];
      for (let k = 0; k < cols; k++) s += x[t * cols + k] * w[r * cols + k];
      y[t * rows + r] = s;
    }
  }
  return y;
}

// [T, rows, cols]: single rows and columns, every tail length of a 16-lane
// vector, T = 1 (decode) up to token counts that take the widened-block path,
// a row count spanning several L2 blocks, and sizes big enough to be split
// across threads.
const LINEAR_SHAPES: Array<[number, number, number]> = [
  [1, 1, 1],
  [1, 5, 7],
  [1, 37, 100],
  [1, 300, 500],
  [3, 9, 33],
  [2, 4, 16],
  [17, 13, 31],
  [70, 21, 47],
  [7, 64, 128],
  [13, 203, 70],
  [20, 130, 1000],
];

test("linear matches the float64 reference for every ISA, dtype and shape", () => {
  const rand = rng(1);
  forEachIsa((isa) => {
    for (const dtype of DTYPES) {
      LINEAR_SHAPES.forEach(([T, rows, cols], i) => {
        const x = randomF32(T * cols, rand);
        const w = randomF32(rows * cols, rand);
        if (dtype === "F16") w[0] = 3e-6; // an f16 subnormal
        const { bytes, exact } = encode(w, dtype, i % 4);
        const bias = i % 2 === 1 ? randomF32(rows, rand) : null;
        const initial = i % 3 === 2 ? randomF32(T * rows, rand) : null;
        const expected = linearReference(x, T, exact, rows, cols, bias, initial);
        const y = ops.linear(x, T, bytes, dtype, rows, cols, bias, initial ? initial.slice() : null);
        const err = relativeError(y, expected);
        assert.ok(err <= TOL, `${isa} ${dtype} T=${T} ${rows}x${cols}: relative error ${err}`);
      });
    }
  });
});

test("linearMany equals one linear per matrix, with thread chunks straddling matrices", () => {
  const rand = rng(21);
  // Row counts not multiples of 4 and mixed dtypes. With 2 threads the shared
  // split of the 4-row groups lands inside a matrix: group 25 of 8+25+16+1
  // (decode-sized, ~6 KiB per group) and group 11 of 12+10 (T = 70).
  for (const [T, cols, rowsList] of [
    [1, 96, [37, 6, 6]],
    [1, 512, [30, 100, 64, 3]],
    [70, 64, [45, 37]],
  ] as Array<[number, number, number[]]>) {
    forEachIsa((isa) => {
      const x = randomF32(T * cols, rand);
      const weights = rowsList.map((rows, i) => {
        const dtype = DTYPES[i % DTYPES.length];
        const { bytes, exact } = encode(randomF32(rows * cols, rand), dtype);
        return { bytes, dtype, rows, exact };
      });
      const ys = ops.linearMany(x, T, cols, weights);
      weights.forEach((w, i) => {
        const expected = linearReference(x, T, w.exact, w.rows, cols, null, null);
        const err = relativeError(ys[i], expected);
        assert.ok(err <= TOL, `${isa} T=${T} matrix ${i} (${w.rows}x${cols} ${w.dtype}): ${err}`);
      });
    });
  }
});

test("linear accumulates in place into accumulateInto", () => {
  const rand = rng(2);
  const [T, rows, cols] = [3, 6, 20];
  const x = randomF32(T * cols, rand);
  const w = randomF32(rows * cols, rand);
  const { bytes, exact } = encode(w, "F32");
  const y = randomF32(T * rows, rand);
  const expected = linearReference(x, T, exact, rows, cols, null, y);
  const out = ops.linear(x, T, bytes, "F32", rows, cols, null, y);
  assert.is(out, y);
  assert.ok(relativeError(y, expected) <= TOL);
});

test("linear gives the same result on every ISA (up to rounding)", () => {
  const rand = rng(3);
  const [T, rows, cols] = [9, 40, 77];
  const x = randomF32(T * cols, rand);
  const { bytes } = encode(randomF32(rows * cols, rand), "BF16");
  const results: Float32Array[] = [];
  forEachIsa(() => results.push(ops.linear(x, T, bytes, "BF16", rows, cols, null, null)));
  for (const r of results) assert.ok(relativeError(r, results[0]) <= TOL);
});

test("linear rejects inconsistent arguments without crashing", async () => {
  const x = new Float32Array(6);
  const w = new Uint8Array(2 * 3 * 4);
  const f32 = (n: number) => new Float32Array(n);
  await rejects(() => ops.linear(f32(5), 2, w, "F32", 2, 3, null, null), /x has length 5/);
  await rejects(() => ops.linear(x, 2, new Uint8Array(23), "F32", 2, 3, null, null), /wBytes/);
  await rejects(() => ops.linear(x, 2, new Uint8Array(12), "F32", 2, 3, null, null), /wBytes/);
  await rejects(() => ops.linear(x, 2, w, "F64" as DType, 2, 3, null, null), /dtype/);
  await rejects(() => ops.linear(x, 2, w, "F32", 2, 3, f32(3), null), /bias/);
  await rejects(() => ops.linear(x, 2, w, "F32", 2, 3, null, f32(5)), /accumulateInto/);
  await rejects(() => ops.linear(x, 0, w, "F32", 2, 3, null, null), /T must be/);
  await rejects(() => ops.linear(x, 2, w, "F32", 2.5, 3, null, null), /rows/);
  await rejects(() => ops.linear(x, 2, w, "F32", -2, -3, null, null), /rows/);
  await rejects(() => ops.linear(x, 2, w, "F32", 2 ** 31, 2 ** 30, null, null), /rows/);
  await rejects(() => ops.linear(x, 2 ** 30, w, "F32", 2 ** 30, 2 ** 30, null, null), /too large/);
  await rejects(() => untyped.linear(new Float64Array(6), 2, w, "F32", 2, 3, null, null), /x must/);
  await rejects(() => untyped.linear(x, 2, f32(6), "F32", 2, 3, null, null), /wBytes/);
  await rejects(() => untyped.linear(x, "2", w, "F32", 2, 3, null, null), /T must/);
  await rejects(() => untyped.linear());
});

// ---- rmsnorm, rope, swiglu, add, embedding --------------------------------------------

test("rmsnorm matches the reference", () => {
  const rand = rng(4);
  for (const [T, d] of [[1, 1], [3, 7], [17, 64], [2, 100]]) {
    const x = randomF32(T * d, rand, 3);
    const w = randomF32(d, rand);
    const eps = 1e-6;
    const expected = new Float64Array(T * d);
    for (let t = 0; t < T; t++) {
      let ss = 0;
      for (let i = 0; i < d; i++) ss += x[t * d + i] ** 2;
      const r = 1 / Math.sqrt(ss / d + eps);
      for (let i = 0; i < d; i++) expected[t * d + i] = x[t * d + i] * r * w[i];
    }
    const err = relativeError(ops.rmsnorm(x, w, T, d, eps), expected);
    assert.ok(err <= TOL, `T=${T} d=${d}: ${err}`);
  }
});

test("rope tables are cos/sin of position * inv_freq, also at large and scaled positions", () => {
  const half = 32;
  const invFreq = Float32Array.from({ length: half }, (_, i) => 1e6 ** (-(2 * i) / (2 * half)));
  const positions = Float64Array.from([0, 1, 7, 1000, 32767, 40000 / 4, 12345.25]);
  const { cos, sin } = ops.ropeTables(positions, invFreq);
  const eCos = new Float64Array(positions.length * half);
  const eSin = new Float64Array(positions.length * half);
  positions.forEach((p, t) => {
    for (let i = 0; i < half; i++) {
      eCos[t * half + i] = Math.cos(p * invFreq[i]);
      eSin[t * half + i] = Math.sin(p * invFreq[i]);
    }
  });
  assert.ok(relativeError(cos, eCos) <= 1e-6);
  assert.ok(relativeError(sin, eSin) <= 1e-6);
});

test("rope rotates the two halves of every head", () => {
  const rand = rng(5);
  for (const [T, heads, hd] of [[1, 1, 2], [3, 2, 6], [17, 3, 64]]) {
    const half = hd / 2;
    const x = randomF32(T * heads * hd, rand);
    const angles = randomF32(T * half, rand, 10);
    const c = angles.map(Math.cos);
    const s = angles.map(Math.sin);
    const expected = new Float64Array(x.length);
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < heads; h++) {
        const base = (t * heads + h) * hd;
        for (let i = 0; i < half; i++) {
          const a = x[base + i];
          const b = x[base + half + i];
          expected[base + i] = a * c[t * half + i] - b * s[t * half + i];
          expected[base + half + i] = b * c[t * half + i] + a * s[t * half + i];
        }
      }
    }
    const err = relativeError(ops.rope(x, c, s, T, heads, hd), expected);
    assert.ok(err <= TOL, `T=${T} heads=${heads} hd=${hd}: ${err}`);
  }
});

test("swiglu is silu(gate) * up on every ISA, finite for large gates, NaN for NaN", () => {
  const rand = rng(6);
  for (const n of [1, 7, 17, 1000]) {
    const gate = randomF32(n, rand, 8);
    if (n > 1) [gate[0], gate[1]] = [-100, 100]; // exp(-g) overflows / vanishes
    const up = randomF32(n, rand);
    const expected = Float64Array.from(gate, (g, i) => (g / (1 + Math.exp(-g))) * up[i]);
    forEachIsa((isa) => {
      const out = ops.swiglu(gate, up);
      assert.ok(out.every(Number.isFinite), isa);
      assert.ok(relativeError(out, expected) <= TOL, `${isa} n=${n}: ${relativeError(out, expected)}`);
      for (let i = 0; i < n; i++) {
        // Elementwise too: ~1 ulp of exp, so a few f32 ulps of the result.
        const tol = 4e-7 * Math.abs(expected[i]) + 1e-30;
        assert.ok(Math.abs(out[i] - expected[i]) <= tol, `${isa} n=${n} at ${i}: ${out[i]} vs ${expected[i]}`);
      }
    });
  }
  const gate = Float32Array.from([NaN, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, NaN]);
  forEachIsa((isa) => {
    const out = ops.swiglu(gate, new Float32Array(gate.length).fill(1));
    assert.ok(Number.isNaN(out[0]) && Number.isNaN(out[16]) && out.slice(1, 16).every(Number.isFinite), isa);
  });
});

test("addInplace adds elementwise into its first argument", () => {
  const rand = rng(7);
  const y = randomF32(37, rand);
  const x = randomF32(37, rand);
  const expected = Float64Array.from(y, (v, i) => v + x[i]);
  assert.is(ops.addInplace(y, x), y);
  assert.ok(relativeError(y, expected) <= 1e-7);
});

test("embedding widens the selected rows exactly, for every dtype", async () => {
  const rand = rng(8);
  const [rows, cols] = [10, 13];
  const ids = Int32Array.from([0, 9, 3, 3]);
  for (const dtype of DTYPES) {
    const { bytes, exact } = encode(randomF32(rows * cols, rand), dtype, 1);
    const out = ops.embedding(ids, bytes, dtype, rows, cols);
    ids.forEach((id, t) => {
      for (let i = 0; i < cols; i++) assert.is(out[t * cols + i], exact[id * cols + i]);
    });
    await rejects(() => ops.embedding(Int32Array.from([10]), bytes, dtype, rows, cols), /outside/);
    await rejects(() => ops.embedding(Int32Array.from([-1]), bytes, dtype, rows, cols), /outside/);
  }
});

test("shape checks of the small ops", async () => {
  const a = new Float32Array(8);
  await rejects(() => ops.rmsnorm(a, new Float32Array(3), 2, 4, 1e-6), /w has length 3/);
  await rejects(() => ops.rmsnorm(a, new Float32Array(4), 2, 4, NaN), /eps/);
  await rejects(() => ops.rope(a, a, a, 2, 1, 3), /even/);
  await rejects(() => ops.rope(a, a, a, 2, 1, 4), /cos/);
  await rejects(() => ops.swiglu(a, new Float32Array(7)), /up/);
  await rejects(() => ops.addInplace(a, new Float32Array(9)));
  await rejects(() => untyped.ropeTables(new Float32Array(2), a), /positions/);
});

// ---- attention --------------------------------------------------------------------

function attentionReference(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  cap: number,
  T: number,
  pos0: number,
  heads: number,
  kvHeads: number,
  hd: number,
): Float64Array {
  const out = new Float64Array(T * heads * hd);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < heads; h++) {
      const kv = Math.floor(h / (heads / kvHeads));
      const n = pos0 + t + 1;
      const scores = new Float64Array(n);
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let i = 0; i < hd; i++) s += q[(t * heads + h) * hd + i] * k[(kv * cap + j) * hd + i];
        scores[j] = s / Math.sqrt(hd);
      }
      const m = Math.max(...scores);
      let sum = 0;
      for (let j = 0; j < n; j++) sum += (scores[j] = Math.exp(scores[j] - m));
      for (let j = 0; j < n; j++)
        for (let i = 0; i < hd; i++) out[(t * heads + h) * hd + i] += (scores[j] / sum) * v[(kv * cap + j) * hd + i];
    }
  }
  return out;
}

test("attention is causal GQA softmax(q.k / sqrt(d)) . v over the cache, on every ISA", () => {
  const rand = rng(9);
  // [T, pos0, heads, kvHeads, headDim, spread]: head dims pick every row kernel
  // (16k -> AVX-512, 8 -> AVX2 also on AVX-512 CPUs, odd -> portable); contexts
  // not multiples of 4 or 16 exercise the vector tails; a wide spread of q
  // values drives exp() into its clamp.
  const cases: Array<[number, number, number, number, number, number]> = [
    [1, 0, 1, 1, 1, 2],
    [1, 20, 4, 2, 8, 2],
    [17, 0, 3, 1, 13, 2],
    [5, 30, 2, 2, 64, 2],
    [70, 3, 4, 4, 16, 2],
    [3, 301, 6, 2, 48, 2],
    [2, 130, 2, 1, 128, 2],
    [4, 45, 2, 1, 32, 60],
  ];
  forEachIsa((isa) => {
    for (const [T, pos0, heads, kvHeads, hd, spread] of cases) {
      const cap = pos0 + T + 5;
      const q = randomF32(T * heads * hd, rand, spread);
      const k = randomF32(kvHeads * cap * hd, rand, 2);
      const v = randomF32(kvHeads * cap * hd, rand);
      // Slots beyond pos0 + T are not filled yet: NaN there catches a non-causal read.
      for (let kv = 0; kv < kvHeads; kv++) {
        k.fill(NaN, (kv * cap + pos0 + T) * hd, (kv + 1) * cap * hd);
        v.fill(NaN, (kv * cap + pos0 + T) * hd, (kv + 1) * cap * hd);
      }
      const expected = attentionReference(q, k, v, cap, T, pos0, heads, kvHeads, hd);
      const err = relativeError(ops.attention(q, k, v, cap, T, pos0, heads, kvHeads, hd), expected);
      assert.ok(err <= TOL, `${isa} T=${T} pos0=${pos0} heads=${heads}/${kvHeads} hd=${hd}: ${err}`);
    }
  });
});

test("attention propagates NaN and infinities the same way on every ISA", () => {
  const rand = rng(21);
  // [T, pos0, heads, kvHeads, hd]: head dims for the AVX-512, AVX2 and portable row
  // kernels; T >= 4 takes the four-row prefill kernel on AVX-512.
  const shapes: Array<[number, number, number, number, number]> = [
    [1, 9, 2, 1, 16],
    [6, 3, 2, 2, 32],
    [2, 12, 2, 1, 8],
    [3, 5, 1, 1, 5],
  ];
  // Poison one K position with NaN, +inf or -inf (V stays finite): a NaN or
  // infinite score must give NaN outputs for every query that sees it.
  for (const poison of [NaN, Infinity, -Infinity]) {
    for (const [T, pos0, heads, kvHeads, hd] of shapes) {
      const cap = pos0 + T;
      const q = randomF32(T * heads * hd, rand, 1);
      const k = randomF32(kvHeads * cap * hd, rand, 1);
      const v = randomF32(kvHeads * cap * hd, rand, 1);
      const at = 1; // seen by every query row (pos0 >= 3)
      k[at * hd] = poison; // kv head 0, first dim
      const masks = new Map<string, string>();
      forEachIsa((isa) => {
        const out = ops.attention(q, k, v, cap, T, pos0, heads, kvHeads, hd);
        masks.set(isa, Array.from(out, (x) => (Number.isNaN(x) ? "n" : Number.isFinite(x) ? "f" : "i")).join(""));
      });
      const scalar = masks.get("scalar")!;
      for (const [isa, mask] of masks) assert.is(mask, scalar, `${isa} vs scalar, poison ${poison}, hd=${hd}, T=${T}`);
      // NaN: query heads reading kv head 0 are all NaN; the others are finite.
      // (An infinite key gives a +inf or -inf score by the sign of q: the masks
      // above already say every ISA agrees with the scalar kernel.)
      if (!Number.isNaN(poison)) continue;
      const group = heads / kvHeads;
      for (let t = 0; t < T; t++)
        for (let h = 0; h < heads; h++) {
          const row = Array.from(ops.attention(q, k, v, cap, T, pos0, heads, kvHeads, hd).subarray((t * heads + h) * hd, (t * heads + h + 1) * hd));
          const reads = Math.floor(h / group) === 0;
          if (reads) assert.ok(row.every(Number.isNaN), `row ${t} head ${h} should be NaN (poison ${poison})`);
          else assert.ok(row.every(Number.isFinite), `row ${t} head ${h} should be finite`);
        }
    }
  }
});

/** A cache as a BF16 KV cache holds it: the bits (rounded to nearest even) and the values they stand for. */
function bf16Cache(x: Float32Array): { bits: Uint16Array; values: Float32Array } {
  const bits = Uint16Array.from(x, bf16Bits);
  return { bits, values: Float32Array.from(bits, bf16Value) };
}

test("attention over a BF16 cache is the float64 reference of the rounded K/V, on every ISA", () => {
  const rand = rng(33);
  // [T, pos0, heads, kvHeads, headDim]: every row kernel (hd 16k, 8, odd), the
  // four-row prefill kernel (T >= 4) and context tails.
  const cases: Array<[number, number, number, number, number]> = [
    [1, 0, 1, 1, 1],
    [1, 37, 4, 2, 8],
    [9, 0, 3, 1, 13],
    [6, 21, 2, 2, 64],
    [3, 130, 2, 1, 128],
  ];
  forEachIsa((isa) => {
    for (const [T, pos0, heads, kvHeads, hd] of cases) {
      const cap = pos0 + T + 3;
      const q = randomF32(T * heads * hd, rand, 2);
      const kRaw = randomF32(kvHeads * cap * hd, rand, 2);
      const vRaw = randomF32(kvHeads * cap * hd, rand);
      for (let kv = 0; kv < kvHeads; kv++) {
        kRaw.fill(NaN, (kv * cap + pos0 + T) * hd, (kv + 1) * cap * hd); // unfilled slots: never read
        vRaw.fill(NaN, (kv * cap + pos0 + T) * hd, (kv + 1) * cap * hd);
      }
      const k = bf16Cache(kRaw);
      const v = bf16Cache(vRaw);
      const out = ops.attention(q, k.bits, v.bits, cap, T, pos0, heads, kvHeads, hd);
      const err = relativeError(out, attentionReference(q, k.values, v.values, cap, T, pos0, heads, kvHeads, hd));
      assert.ok(err <= TOL, `${isa} T=${T} pos0=${pos0} heads=${heads}/${kvHeads} hd=${hd}: ${err}`);
      // Widening is exact: the same kernel on an F32 cache of those values gives the same bits.
      const f32 = ops.attention(q, k.values, v.values, cap, T, pos0, heads, kvHeads, hd);
      assert.equal(Array.from(out), Array.from(f32), `${isa} hd=${hd}: BF16 and F32 caches of the same values`);
    }
  });
});

test("attention over a BF16 cache propagates NaN and infinities the same way on every ISA", () => {
  const rand = rng(34);
  const shapes: Array<[number, number, number, number, number]> = [
    [1, 9, 2, 1, 16],
    [6, 3, 2, 2, 32],
    [2, 12, 2, 1, 8],
    [3, 5, 1, 1, 5],
  ];
  // BF16 NaN, +inf, -inf in one K position (seen by every query row), then in V.
  for (const [poison, inV] of [[0x7fc0, false], [0x7f80, false], [0xff80, false], [0x7fc0, true]] as const) {
    for (const [T, pos0, heads, kvHeads, hd] of shapes) {
      const cap = pos0 + T;
      const q = randomF32(T * heads * hd, rand, 1);
      const k = bf16Cache(randomF32(kvHeads * cap * hd, rand, 1)).bits;
      const v = bf16Cache(randomF32(kvHeads * cap * hd, rand, 1)).bits;
      (inV ? v : k)[1 * hd] = poison; // kv head 0, position 1, first dim
      const masks = new Map<string, string>();
      forEachIsa((isa) => {
        const out = ops.attention(q, k, v, cap, T, pos0, heads, kvHeads, hd);
        masks.set(isa, Array.from(out, (x) => (Number.isNaN(x) ? "n" : Number.isFinite(x) ? "f" : "i")).join(""));
      });
      const scalar = masks.get("scalar")!;
      for (const [isa, mask] of masks) assert.is(mask, scalar, `${isa} vs scalar, poison ${poison.toString(16)}${inV ? " in V" : ""}, hd=${hd}`);
      if (poison !== 0x7fc0) continue;
      // NaN: every query head reading kv head 0 is NaN (all of its row for K,
      // its first dim for V); the other heads stay finite.
      const group = heads / kvHeads;
      for (let t = 0; t < T; t++)
        for (let h = 0; h < heads; h++) {
          const row = scalar.slice((t * heads + h) * hd, (t * heads + h + 1) * hd);
          const expected = Math.floor(h / group) !== 0 ? "f".repeat(hd) : inV ? "n" + "f".repeat(hd - 1) : "n".repeat(hd);
          assert.is(row, expected, `row ${t} head ${h}${inV ? " (NaN in V)" : ""}`);
        }
    }
  }
});

test("attention rejects inconsistent shapes", async () => {
  const q = new Float32Array(2 * 3 * 4);
  const kv = new Float32Array(1 * 8 * 4);
  await rejects(() => ops.attention(q, kv, kv, 8, 2, 0, 3, 2, 4), /multiple/);
  await rejects(() => ops.attention(q, kv, kv, 8, 2, 7, 3, 1, 4), /capacity/);
  await rejects(() => ops.attention(q, kv.subarray(1), kv, 8, 2, 0, 3, 1, 4), /kCache/);
  await rejects(() => ops.attention(q, kv, kv, 8, 2, 0, 3, 0, 4), /nKvHeads/);
  // A BF16 cache is two Uint16Arrays: not one of each, and of the right length.
  const bits = new Uint16Array(1 * 8 * 4);
  await rejects(() => ops.attention(q, bits, kv, 8, 2, 0, 3, 1, 4), /vCache/);
  await rejects(() => ops.attention(q, kv, bits, 8, 2, 0, 3, 1, 4), /vCache/);
  await rejects(() => ops.attention(q, bits, bits.subarray(2), 8, 2, 0, 3, 1, 4), /vCache/);
});

// ---- sampling ----------------------------------------------------------------------

interface Reference {
  id: number;
  /** u or the top-p cut fell so close to a boundary that f32 rounding may decide it. */
  ambiguous: boolean;
}

/** The rules documented in native/kernels/cpu/sampling.cpp, in float64. */
function sampleReference(logits: Float32Array, p: Required<SamplingOptions>, u: number): Reference {
  const l = Array.from(logits, (v) => (Number.isNaN(v) ? -Infinity : v));
  let best = 0;
  for (let i = 1; i < l.length; i++) if (l[i] > l[best]) best = i;
  if (!(p.temperature > 0) || l[best] === -Infinity) return { id: best, ambiguous: false };
  const m = l[best];
  const e = l.map((v) => (v === m ? 1 : v === -Infinity ? 0 : Math.exp((v - m) / p.temperature)));
  let ids = l.map((_, i) => i).filter((i) => e[i] > 0);
  ids.sort((a, b) => (l[a] === l[b] ? a - b : l[a] > l[b] ? -1 : 1));
  if (p.topK > 0 && p.topK < ids.length) ids = ids.slice(0, p.topK);
  const near = (a: number, b: number, scale: number) => Math.abs(a - b) <= 1e-6 * scale;
  let ambiguous = false;
  if (p.topP < 1) {
    const total = ids.reduce((s, i) => s + e[i], 0);
    let cum = 0;
    let keep = ids.length;
    for (let j = 0; j < ids.length; j++) {
      cum += e[ids[j]];
      if (near(cum, p.topP * total, total)) ambiguous = true;
      if (cum >= p.topP * total) {
        keep = j + 1;
        break;
      }
    }
    ids = ids.slice(0, keep);
  }
  ids.sort((a, b) => a - b);
  const total = ids.reduce((s, i) => s + e[i], 0);
  let cum = 0;
  for (const i of ids) {
    cum += e[i];
    if (near(cum, u * total, total)) ambiguous = true;
    if (cum > u * total) return { id: i, ambiguous };
  }
  return { id: ids[ids.length - 1], ambiguous };
}

function randomLogits(n: number, rand: () => number, scale = 4): Float32Array {
  return randomF32(n, rand, scale);
}

test("greedy picks the argmax, lowest index on ties; NaN, +inf and all -inf logits are ERR_NON_FINITE", async () => {
  const rand = rng(10);
  const logits = randomLogits(1000, rand);
  const argmax = logits.indexOf(Math.max(...logits));
  for (const u of [0, 0.5, 0.999]) assert.is(sampleToken(logits, { temperature: 0 }, u), argmax);
  assert.is(sampleToken(Float32Array.from([1, 3, 3, 2]), {}, 0.7), 1);
  assert.is(sampleToken(Float32Array.from([-Infinity, 1, -Infinity, 2, 2]), { temperature: 0 }, 0), 3);
  await expectError(() => sampleToken(Float32Array.from([NaN, 1, NaN, 2, 2]), { temperature: 0 }, 0), "ERR_NON_FINITE", /logit 0 is NaN/);
  await expectError(() => sampleToken(Float32Array.from([1, 5, Infinity]), { temperature: 1 }, 0.9), "ERR_NON_FINITE", /logit 2 is \+Infinity/);
  await expectError(() => sampleToken(Float32Array.from([-Infinity, -Infinity]), { temperature: 1 }, 0.5), "ERR_NON_FINITE", /every logit is -Infinity/);
  assert.is(sampleToken(Float32Array.from([0, 1, 2]), { temperature: 1e-30 }, 0.999), 2);
});

test("top_k = 1 is greedy for every u", () => {
  const rand = rng(11);
  const logits = randomLogits(500, rand);
  const greedy = sampleToken(logits, { temperature: 0 }, 0);
  for (let i = 0; i < 50; i++) assert.is(sampleToken(logits, { temperature: 1.3, topK: 1 }, i / 50), greedy);
});

test("sampling inverts the CDF exactly as the reference does", () => {
  const rand = rng(12);
  const params: Array<Required<SamplingOptions>> = [
    { temperature: 1, topK: 0, topP: 1 },
    { temperature: 0.7, topK: 40, topP: 1 },
    { temperature: 1.5, topK: 0, topP: 0.9 },
    { temperature: 0.8, topK: 100, topP: 0.5 },
    { temperature: 1, topK: 3000, topP: 0.95 }, // top_k beyond the vocabulary: off
    { temperature: 1, topK: 0, topP: 0.999 }, // nucleus larger than the first prefix of 64
  ];
  let checked = 0;
  for (const p of params) {
    const logits = randomLogits(2000, rand, 3);
    logits[7] = -Infinity;
    logits[8] = -Infinity;
    for (let i = 0; i < 200; i++) {
      const u = (i + rand()) / 200;
      const ref = sampleReference(logits, p, u);
      if (ref.ambiguous) continue;
      assert.is(sampleToken(logits, p, u), ref.id, `params ${JSON.stringify(p)} u=${u}`);
      checked++;
    }
  }
  assert.ok(checked > 1100, `only ${checked} unambiguous draws`);
});

test("top_p never picks a token outside the nucleus", () => {
  const rand = rng(13);
  const logits = randomLogits(3000, rand, 6);
  const p = { temperature: 1, topK: 0, topP: 0.6 };
  const ref = sampleReference(logits, p, 0);
  // The nucleus: the most likely tokens until their mass reaches 0.6.
  const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
  const e = order.map((i) => Math.exp(logits[i] - logits[order[0]]));
  const total = e.reduce((s, v) => s + v, 0);
  const nucleus = new Set<number>();
  for (let j = 0, cum = 0; cum < 0.6 * total; j++) {
    cum += e[j];
    nucleus.add(order[j]);
  }
  assert.ok(nucleus.size > 1 && nucleus.size < 3000);
  assert.ok(nucleus.has(ref.id));
  const seen = new Set<number>();
  for (let i = 0; i < 5000; i++) {
    const id = sampleToken(logits, p, i / 5000);
    assert.ok(nucleus.has(id), `token ${id} outside the nucleus`);
    seen.add(id);
  }
  assert.is(seen.size, nucleus.size, "every nucleus token is reachable");
});

test("a uniform grid of u reproduces the softmax distribution", () => {
  const logits = Float32Array.from([0.5, -1, 2, 0, 1.25, -3, 1]);
  const temperature = 0.9;
  const w = Array.from(logits, (l) => Math.exp(l / temperature));
  const total = w.reduce((s, v) => s + v, 0);
  const N = 20000;
  const counts = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < N; i++) counts[sampleToken(logits, { temperature }, (i + 0.5) / N)]++;
  counts.forEach((c, i) => {
    const expected = (N * w[i]) / total;
    assert.ok(Math.abs(c - expected) <= 1.5, `token ${i}: ${c} draws, expected ${expected}`);
  });
});

test("sampling handles -inf logits and extreme temperatures", () => {
  const flat = Float32Array.from([1, 2, 3, -Infinity]);
  // A huge temperature flattens the finite logits to uniform; -inf keeps no mass.
  assert.is(sampleToken(flat, { temperature: 1e30 }, 0.1), 0);
  assert.is(sampleToken(flat, { temperature: 1e30 }, 0.5), 1);
  assert.is(sampleToken(flat, { temperature: 1e30 }, 0.99), 2);
});

test("sampling a 152k vocabulary matches the reference and is fast", () => {
  const rand = rng(14);
  const logits = randomLogits(151936, rand, 8);
  for (const p of [
    { temperature: 0.7, topK: 0, topP: 0.9 },
    { temperature: 1, topK: 50, topP: 1 },
    { temperature: 1, topK: 0, topP: 1 },
  ]) {
    const u = rand();
    const ref = sampleReference(logits, p, u);
    if (!ref.ambiguous) assert.is(sampleToken(logits, p, u), ref.id);
    const started = performance.now();
    for (let i = 0; i < 20; i++) sampleToken(logits, p, i / 20);
    const ms = (performance.now() - started) / 20;
    assert.ok(ms < 50, `${JSON.stringify(p)}: ${ms.toFixed(2)} ms per draw`);
  }
});

test("sampleToken rejects bad arguments", async () => {
  const l = Float32Array.from([1, 2]);
  for (const u of [1, -0.1, NaN, Infinity]) await rejects(() => sampleToken(l, {}, u), /u must/);
  await rejects(() => sampleToken(new Float32Array(0), {}, 0), /1 to 2\^31-1 entries/);
  await rejects(() => sampleToken(l, { temperature: NaN }, 0), /temperature/);
  await rejects(() => sampleToken(l, { temperature: -1 }, 0), /temperature/);
  await rejects(() => sampleToken(l, { topK: -1 }, 0), /topK/);
  await rejects(() => sampleToken(l, { topK: 1.5 }, 0), /topK/);
  await rejects(() => sampleToken(l, { topP: 0 }, 0), /topP/);
  await rejects(() => sampleToken(l, { topP: 1.5 }, 0), /topP/);
  await rejects(() => untypedSample(l, { temperature: "1" }, 0), /temperature/);
  await rejects(() => untypedSample(Array.from(l), {}, 0), /logits/);
  await rejects(() => untypedSample(l, null, 0), /params/);
});

// ---- ISA control --------------------------------------------------------------------

test("cpuInfo reports the ISAs and setIsa switches between them", async () => {
  const info = ops.cpuInfo();
  assert.ok(ALL_ISAS.includes(info.best));
  assert.ok(ALL_ISAS.indexOf(info.active) <= ALL_ISAS.indexOf(info.best));
  assert.ok(info.threads >= 1);
  forEachIsa((isa) => assert.is(ops.cpuInfo().active, isa));
  assert.is(ops.cpuInfo().active, startIsa);
  await rejects(() => ops.setIsa("sse9"), /isa must/);
  await rejects(() => untyped.setIsa(2), /isa must/);
  const unsupported = ALL_ISAS.slice(ALL_ISAS.indexOf(info.best) + 1);
  for (const isa of unsupported) await expectError(() => ops.setIsa(isa), "ERR_ISA_UNSUPPORTED");
});

test.run();
