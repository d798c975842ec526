// Block-quantized formats and kernels: each format's bytes decoded here from the
// documented layout (native/quant/formats.h) independently of the native
// dequantizer; quantization error within each format's bound; the quantized
// linear kernel on every ISA against a float64 reference over the dequantized
// weights, at odd row / token counts and block counts.
import { test } from "uvu";
import * as assert from "uvu/assert";
import { native } from "../../lib/native.js";
import { expectError } from "../support/expect.js";
import { BLOCK_BYTES, HEADER_BYTES, QK, decodeMatrix, f16, type Format } from "../support/quant.js";
import { rng } from "../support/random.js";

interface QuantOps {
  quantize(x: Float32Array, rows: number, cols: number, format: string): Uint8Array;
  dequantize(bytes: Uint8Array, rows: number, cols: number, format: string): Float32Array;
  linearQ(
    x: Float32Array,
    T: number,
    bytes: Uint8Array,
    format: string,
    rows: number,
    cols: number,
    bias: Float32Array | null,
    accumulateInto: Float32Array | null,
  ): Float32Array;
  cpuInfo(): { best: string; active: string };
  quantInfo(): { avx512vnni: boolean; amx: boolean };
  setAmx(enabled: boolean): void;
  setIsa(isa: string): void;
}
const ops = (native() as unknown as { testing: QuantOps }).testing;
const untyped = ops as unknown as Record<string, (...args: unknown[]) => unknown>;
const ALL_ISAS = ["scalar", "avx2", "avx512"];
const startIsa = ops.cpuInfo().active;
const ISAS = ALL_ISAS.slice(0, ALL_ISAS.indexOf(ops.cpuInfo().best) + 1);
const FORMATS: Format[] = ["q8_0", "q4_0", "q4_k"];
const AMX = ops.quantInfo().amx;

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

function randomF32(n: number, rand: () => number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => (rand() * 2 - 1) * scale);
}

for (const f of FORMATS) {
  test(`${f}: bytes follow the documented layout and the error stays within the format's bound`, () => {
    const rand = rng(11);
    const rows = 21; // a full row group and a group of 5
    const cols = QK[f] * 3;
    const x = randomF32(rows * cols, rand, 0.7);
    x[3] = 2.5; // an outlier in one block
    x.fill(0, cols, cols + QK[f]); // an all-zero block
    const bytes = ops.quantize(x, rows, cols, f);
    assert.is(bytes.length, (rows * cols * BLOCK_BYTES[f]) / QK[f]);
    const { w, step } = decodeMatrix(f, bytes, rows, cols);
    const native = ops.dequantize(bytes, rows, cols, f);
    let worstRatio = 0;
    for (let i = 0; i < x.length; i++) {
      assert.ok(Math.abs(native[i] - w[i]) <= 1e-6 * Math.abs(w[i]), `dequantize differs at ${i}: ${native[i]} vs ${w[i]}`);
      // Rounding to the nearest code is at most half a step (plus f16 scale rounding);
      // Q4_0's far side can clamp by up to one step.
      const bound = (f === "q4_0" ? 1.0 : 0.5) * step[i] * 1.002 + 1e-7;
      const err = Math.abs(w[i] - x[i]);
      assert.ok(err <= bound, `${f} element ${i}: |${w[i]} - ${x[i]}| = ${err} > ${bound}`);
      worstRatio = Math.max(worstRatio, err / (step[i] || 1));
    }
    for (let i = cols; i < cols + QK[f]; i++) assert.is(w[i], 0, "an all-zero block decodes to zeros");
    assert.ok(worstRatio > 0.2, "the test input exercises rounding");
  });
}

test("rows are stored in groups of 16, each block column's headers before its codes", () => {
  for (const f of FORMATS) {
    const rand = rng(12);
    const rows = 37; // groups of 16, 16 and 5
    const per = 3;
    const cols = QK[f] * per;
    const x = randomF32(rows * cols, rand, 0.7);
    const bytes = ops.quantize(x, rows, cols, f);
    const B = BLOCK_BYTES[f];
    const H = HEADER_BYTES[f];
    for (let r = 0; r < rows; r++) {
      // A one-row matrix is a lone group: its blocks are contiguous, GGUF's row layout.
      const alone = ops.quantize(x.subarray(r * cols, (r + 1) * cols), 1, cols, f);
      const g0 = r - (r % 16);
      const n = Math.min(16, rows - g0);
      const j = r - g0;
      for (let k = 0; k < per; k++) {
        const column = g0 * per * B + k * n * B;
        const header = bytes.subarray(column + j * H, column + (j + 1) * H);
        const codes = bytes.subarray(column + n * H + j * (B - H), column + n * H + (j + 1) * (B - H));
        assert.equal([...header], [...alone.subarray(k * B, k * B + H)], `${f} row ${r} block ${k} header`);
        assert.equal([...codes], [...alone.subarray(k * B + H, (k + 1) * B)], `${f} row ${r} block ${k} codes`);
      }
    }
  }
});

test("q8_0: a block's scale is max|x| / 127 (in f16) and its codes are round(x / d)", () => {
  const x = Float32Array.from({ length: 32 }, (_, i) => (i - 16) * 0.25);
  const bytes = ops.quantize(x, 1, 32, "q8_0");
  const d = f16(bytes, 0);
  assert.ok(Math.abs(d - 4 / 127) < 4 / 127 / 1000);
  for (let i = 0; i < 32; i++) assert.is((bytes[2 + i] << 24) >> 24, Math.round(x[i] / d));
});

/**
 * Activations whose 32-blocks each have max |x| = 127 * 2^e quantize exactly,
 * so the kernel must match the float64 reference to f32 summation error.
 */
function exactActivations(T: number, cols: number, rand: () => number): Float32Array {
  const x = new Float32Array(T * cols);
  for (let b = 0; b < (T * cols) / 32; b++) {
    const scale = 2 ** (Math.floor(rand() * 6) - 8);
    for (let i = 0; i < 32; i++) x[b * 32 + i] = Math.round((rand() * 2 - 1) * 127) * scale;
    x[b * 32 + Math.floor(rand() * 32)] = (rand() < 0.5 ? -127 : 127) * scale;
  }
  return x;
}

/** v rounded to the nearest f16 (ties to even), as a number. */
function roundF16(v: number): number {
  if (v === 0 || !Number.isFinite(v)) return v;
  const a = Math.abs(v);
  const e = Math.max(Math.floor(Math.log2(a)), -14);
  const ulp = 2 ** (e - 10);
  let q = a / ulp;
  const f = Math.floor(q);
  q = q - f > 0.5 || (q - f === 0.5 && f % 2 === 1) ? f + 1 : f;
  return Math.sign(v) * q * ulp;
}

/** v rounded to the nearest bf16 (ties to even). */
function roundBf16(v: number): number {
  const f = new Float32Array([v]);
  const u = new Uint32Array(f.buffer);
  u[0] = ((u[0] + 0x7fff + ((u[0] >>> 16) & 1)) >>> 16) << 16;
  return f[0];
}

/** From this many tokens the SIMD kernels multiply f16-rounded dequantized weights (matmul_impl.h). */
const PREFILL_TOKENS = 16;

function reference(x: Float32Array, w: Float64Array, T: number, rows: number, cols: number, bias: Float32Array | null): Float64Array {
  const y = new Float64Array(T * rows);
  for (let t = 0; t < T; t++)
    for (let r = 0; r < rows; r++) {
      let s = bias ? bias[r] : 0;
      for (let k = 0; k < cols; k++) s += x[t * cols + k] * w[r * cols + k];
      y[t * rows + r] = s;
    }
  return y;
}

/** Bound on |x . w - xq . w| from per-element activation rounding of at most dx / 2. */
function activationBound(x: Float32Array, w: Float64Array, T: number, rows: number, cols: number): Float64Array {
  const out = new Float64Array(T * rows);
  for (let t = 0; t < T; t++) {
    const half: number[] = [];
    for (let b = 0; b < cols / 32; b++) {
      let m = 0;
      for (let i = 0; i < 32; i++) m = Math.max(m, Math.abs(x[t * cols + b * 32 + i]));
      half.push(m / 127 / 2);
    }
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let k = 0; k < cols; k++) s += Math.abs(w[r * cols + k]) * half[k >> 5];
      out[t * rows + r] = s;
    }
  }
  return out;
}

// Sizes: row tails (rows % 4), token tiles and their tails (T up to 9), odd block counts.
// One token on whole row groups (rows 50 and 160: Q8_0's decode kernel, the
// last split across pool threads), with a partial group after them.
// The last ones are prefill-sized calls (16+ tokens), wide and long enough to
// be split across pool threads, with token and row counts that are not
// multiples of the AMX tiles (16 / 32).
const SHAPES: { T: number; rows: number; blocks: number }[] = [
  { T: 1, rows: 7, blocks: 3 },
  { T: 1, rows: 50, blocks: 5 },
  { T: 1, rows: 160, blocks: 0 },
  { T: 2, rows: 33, blocks: 3 },
  { T: 3, rows: 13, blocks: 1 },
  { T: 9, rows: 37, blocks: 5 },
  { T: 67, rows: 6, blocks: 0 },
  { T: 17, rows: 45, blocks: 0 },
];

for (const f of FORMATS) {
  test(`linear on ${f} weights matches a float64 reference on every ISA (exact activations, bias, accumulate)`, () => {
    const rand = rng(21);
    for (const { T, rows, blocks } of SHAPES) {
      const cols = blocks ? blocks * QK[f] : 2048;
      const wf = randomF32(rows * cols, rand, 0.5);
      const bytes = ops.quantize(wf, rows, cols, f);
      const { w } = decodeMatrix(f, bytes, rows, cols);
      const x = exactActivations(T, cols, rand);
      const bias = randomF32(rows, rand);
      const refExact = reference(x, w, T, rows, cols, bias);
      const refF16 = T >= PREFILL_TOKENS ? reference(x, w.map(roundF16), T, rows, cols, bias) : refExact;
      let scale = 0;
      for (const v of refExact) scale = Math.max(scale, Math.abs(v));
      // AMX prefill rounds weights and activations to BF16.
      const refBf16 = T >= PREFILL_TOKENS ? reference(x.map(roundBf16), w.map(roundBf16), T, rows, cols, bias) : refExact;
      forEachIsa((isa) => {
        for (const amx of isa === "avx512" && T >= PREFILL_TOKENS && AMX ? [false, true] : [false]) {
          ops.setAmx(amx);
          const ref = isa === "scalar" ? refExact : amx ? refBf16 : refF16;
          const y = ops.linearQ(x, T, bytes, f, rows, cols, bias, null);
          for (let i = 0; i < y.length; i++)
            assert.ok(Math.abs(y[i] - ref[i]) <= 2e-5 * scale, `${isa}${amx ? "+amx" : ""} ${f} T=${T} rows=${rows}: ${y[i]} vs ${ref[i]} at ${i}`);
        }
        ops.setAmx(AMX);
        const ref = isa === "scalar" ? refExact : isa === "avx512" && AMX ? refBf16 : refF16;
        const base = randomF32(T * rows, rand);
        const acc = ops.linearQ(x, T, bytes, f, rows, cols, null, base.slice());
        for (let i = 0; i < acc.length; i++) {
          const want = base[i] + ref[i] - bias[i % rows];
          assert.ok(Math.abs(acc[i] - want) <= 2e-5 * (scale + 1), `${isa} ${f} accumulate at ${i}: ${acc[i]} vs ${want}`);
        }
      });
    }
  });

  test(`linear on ${f} weights with arbitrary activations stays within the activation-rounding bound on every ISA`, () => {
    const rand = rng(31);
    const T = 5;
    const rows = 11;
    const cols = QK[f] * 2;
    const bytes = ops.quantize(randomF32(rows * cols, rand, 0.3), rows, cols, f);
    const { w } = decodeMatrix(f, bytes, rows, cols);
    const x = randomF32(T * cols, rand, 2);
    const ref = reference(x, w, T, rows, cols, null);
    const bound = activationBound(x, w, T, rows, cols);
    forEachIsa((isa) => {
      const y = ops.linearQ(x, T, bytes, f, rows, cols, null, null);
      for (let i = 0; i < y.length; i++)
        assert.ok(Math.abs(y[i] - ref[i]) <= bound[i] + 1e-5 * Math.abs(ref[i]) + 1e-6, `${isa} ${f} at ${i}: ${y[i]} vs ${ref[i]} (bound ${bound[i]})`);
    });
  });
}

test("the AVX-512 kernels are the VNNI ones where the CPU has VNNI, AMX where it has AMX (reported, not assumed)", () => {
  assert.type(ops.quantInfo().avx512vnni, "boolean");
  assert.type(AMX, "boolean");
  ops.setAmx(false);
  assert.is(ops.quantInfo().amx, false);
  ops.setAmx(true);
  assert.is(ops.quantInfo().amx, AMX);
});

test("bad inputs: unknown format, widths that are not whole blocks, wrong lengths", async () => {
  await expectError(() => ops.quantize(new Float32Array(32), 1, 32, "q5_1"), "ERR_QUANT_FORMAT", /q8_0/);
  await expectError(() => ops.quantize(new Float32Array(40), 1, 40, "q8_0"), "ERR_QUANT_BLOCK", /40 .*Q8_0 block size 32/);
  await expectError(() => ops.quantize(new Float32Array(64), 1, 64, "q4_k"), "ERR_QUANT_BLOCK", /256/);
  await expectError(() => ops.quantize(new Float32Array(31), 1, 32, "q8_0"), "ERR_ARGUMENT");
  await expectError(() => ops.dequantize(new Uint8Array(33), 1, 32, "q8_0"), "ERR_ARGUMENT", /wrong length/);
  await expectError(() => ops.linearQ(new Float32Array(32), 1, new Uint8Array(18), "q8_0", 1, 32, null, null), "ERR_ARGUMENT");
  await expectError(() => untyped.linearQ(null, 1, new Uint8Array(34), "q8_0", 1, 32, null, null), "ERR_ARGUMENT");
});

test.run();
