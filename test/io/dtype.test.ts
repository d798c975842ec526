import { test } from "uvu";
import * as assert from "uvu/assert";
import {
  bf16BytesToF64,
  decodeTensor,
  encodeTensor,
  f16BytesToF64,
  f32Bytes,
  f32ToBf16Bytes,
  f32ToF16Bytes,
} from "../../lib/io/dtype.js";

function bits16(bytes: Uint8Array): number[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Array.from({ length: bytes.length / 2 }, (_, i) => view.getUint16(i * 2, true));
}

function allPatterns16(): Uint8Array {
  const bytes = new Uint8Array(65536 * 2);
  const view = new DataView(bytes.buffer);
  for (let b = 0; b < 65536; b++) view.setUint16(b * 2, b, true);
  return bytes;
}

test("every non-NaN f16 bit pattern survives decode then encode", () => {
  const values = f16BytesToF64(allPatterns16());
  const back = bits16(f32ToF16Bytes(Array.from(values)));
  for (let b = 0; b < 65536; b++) {
    if (!Number.isNaN(values[b])) assert.is(back[b], b, `pattern 0x${b.toString(16)}`);
    else assert.ok(Number.isNaN(f16BytesToF64(f32ToF16Bytes([values[b]]))[0]));
  }
});

test("every non-NaN bf16 bit pattern survives decode then encode", () => {
  const values = bf16BytesToF64(allPatterns16());
  const back = bits16(f32ToBf16Bytes(Array.from(values)));
  for (let b = 0; b < 65536; b++) {
    if (!Number.isNaN(values[b])) assert.is(back[b], b, `pattern 0x${b.toString(16)}`);
    else assert.ok(Number.isNaN(bf16BytesToF64(f32ToBf16Bytes([values[b]]))[0]));
  }
});

test("f16 rounds to nearest even, with subnormals and overflow", () => {
  const cases: Array<[number, number]> = [
    [1, 0x3c00],
    [-0, 0x8000],
    [1 / 3, 0x3555],
    [1 + 2 ** -11, 0x3c00], // tie between 1 and 1+2^-10: keep the even mantissa
    [1 + 3 * 2 ** -11, 0x3c02], // tie: round up to the even mantissa
    [65504, 0x7bff],
    [65520, 0x7c00], // tie between max and the next step: rounds to even = Inf
    [2 ** -24, 0x0001],
    [2 ** -25, 0x0000], // tie with zero: even
    [1.5 * 2 ** -25, 0x0001],
    [3 * 2 ** -25, 0x0002], // subnormal tie: round to even
    [2 ** -14 - 2 ** -25, 0x0400], // carry from the largest subnormal into the smallest normal
    [-Infinity, 0xfc00],
  ];
  for (const [value, expected] of cases) assert.is(bits16(f32ToF16Bytes([value]))[0], expected, `f16(${value})`);
});

test("bf16 rounds to nearest even and keeps NaN a NaN", () => {
  const cases: Array<[number, number]> = [
    [1, 0x3f80],
    [1 / 3, 0x3eab],
    [1 + 2 ** -8, 0x3f80], // tie: even
    [1 + 3 * 2 ** -8, 0x3f82], // tie: up to even
    [3.4e38, 0x7f80], // rounds past the largest bf16: Inf
    [-Infinity, 0xff80],
  ];
  for (const [value, expected] of cases) assert.is(bits16(f32ToBf16Bytes([value]))[0], expected, `bf16(${value})`);
  assert.ok(Number.isNaN(bf16BytesToF64(f32ToBf16Bytes([NaN]))[0]));
});

test("encodeTensor and decodeTensor agree for every float dtype", () => {
  const values = [0, 1, -2.5, 0.1, 1e-3, 123.456];
  for (const dtype of ["F64", "F32", "F16", "BF16"]) {
    const once = decodeTensor(encodeTensor(values, dtype), dtype);
    assert.equal(Array.from(decodeTensor(encodeTensor(once, dtype), dtype)), Array.from(once), dtype);
  }
  assert.equal(Array.from(decodeTensor(encodeTensor(values, "F64"), "F64")), values);
  assert.equal(Array.from(decodeTensor(f32Bytes(values), "F32")), values.map(Math.fround));
});

test("decodeTensor names an unsupported dtype", () => {
  try {
    decodeTensor(new Uint8Array(4), "I32");
    assert.unreachable();
  } catch (err) {
    assert.is((err as { code?: string }).code, "ERR_DTYPE");
    assert.match((err as Error).message, "I32");
  }
});

test.run();
