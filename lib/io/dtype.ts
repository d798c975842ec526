/**
 * Conversions between JavaScript numbers and the little-endian byte layouts that
 * safetensors stores. BF16 and F16 are produced with round-to-nearest-even, the
 * rounding torch uses, so values written here match what a real checkpoint holds.
 */
import { DeepGuardError } from "../errors.js";

// Scratch cell for reinterpreting a float32 as its bit pattern.
const f32Cell = new Float32Array(1);
const u32Cell = new Uint32Array(f32Cell.buffer);

function f32Bits(value: number): number {
  f32Cell[0] = value;
  return u32Cell[0];
}

function bitsToF32(bits: number): number {
  u32Cell[0] = bits;
  return f32Cell[0];
}

function bf16BitsFromF32(value: number): number {
  const bits = f32Bits(value);
  // NaN: keep the sign and force a quiet NaN; rounding could otherwise turn it into Inf.
  if ((bits & 0x7fffffff) > 0x7f800000) return (bits >>> 16) | 0x0040;
  // Adding 0x7fff plus the kept lsb rounds to nearest, ties to even. Cannot pass 2^32 for non-NaN input.
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

function f16BitsFromF32(value: number): number {
  const bits = f32Bits(value);
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa !== 0 ? 0x0200 : 0);
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 0x1f) return sign | 0x7c00;
  if (halfExponent > 0) {
    const half = sign | (halfExponent << 10) | (mantissa >>> 13);
    const rest = mantissa & 0x1fff;
    // A carry out of the mantissa correctly bumps the exponent (and reaches Inf at the top).
    return rest > 0x1000 || (rest === 0x1000 && (half & 1) === 1) ? half + 1 : half;
  }
  // Subnormal half: the value is (1.mantissa) * 2^(exponent-127) = full * 2^-24 >> shift.
  const shift = 14 - halfExponent;
  if (shift > 24) return sign; // below half of the smallest subnormal: rounds to zero
  const full = mantissa | 0x800000;
  const half = full >>> shift;
  const rest = full - half * 2 ** shift;
  const midpoint = 2 ** (shift - 1);
  return sign | (rest > midpoint || (rest === midpoint && (half & 1) === 1) ? half + 1 : half);
}

function f64FromF16Bits(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa !== 0 ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

function encode16(values: ArrayLike<number>, toBits: (value: number) => number): Uint8Array {
  const out = new Uint8Array(values.length * 2);
  const view = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) view.setUint16(i * 2, toBits(values[i]), true);
  return out;
}

function decode16(bytes: Uint8Array, fromBits: (bits: number) => number): Float64Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float64Array(bytes.byteLength >>> 1);
  for (let i = 0; i < out.length; i++) out[i] = fromBits(view.getUint16(i * 2, true));
  return out;
}

export function f32ToBf16Bytes(values: Float32Array | number[]): Uint8Array {
  return encode16(values, bf16BitsFromF32);
}

export function bf16BytesToF64(bytes: Uint8Array): Float64Array {
  return decode16(bytes, (bits) => bitsToF32(bits << 16));
}

export function f32ToF16Bytes(values: Float32Array | number[]): Uint8Array {
  return encode16(values, f16BitsFromF32);
}

export function f16BytesToF64(bytes: Uint8Array): Float64Array {
  return decode16(bytes, f64FromF16Bits);
}

/** Little-endian float32 bytes (values are rounded to float32). */
export function f32Bytes(values: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i], true);
  return out;
}

function f64Bytes(values: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(values.length * 8);
  const view = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) view.setFloat64(i * 8, values[i], true);
  return out;
}

function unsupported(dtype: string): DeepGuardError {
  return new DeepGuardError("ERR_DTYPE", `dtype ${dtype} is not a float dtype (expected F64, F32, F16 or BF16)`);
}

/** Stores numbers in a float dtype. F16/BF16 go through float32 first, as torch's .to() does. */
export function encodeTensor(values: ArrayLike<number>, dtype: string): Uint8Array {
  switch (dtype) {
    case "F64":
      return f64Bytes(values);
    case "F32":
      return f32Bytes(values);
    case "F16":
      return f32ToF16Bytes(Float32Array.from(values));
    case "BF16":
      return f32ToBf16Bytes(Float32Array.from(values));
    default:
      throw unsupported(dtype);
  }
}

/** Widens stored float bytes to float64 exactly. */
export function decodeTensor(bytes: Uint8Array, dtype: string): Float64Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case "F64":
      return Float64Array.from({ length: bytes.byteLength >>> 3 }, (_, i) => view.getFloat64(i * 8, true));
    case "F32":
      return Float64Array.from({ length: bytes.byteLength >>> 2 }, (_, i) => view.getFloat32(i * 4, true));
    case "F16":
      return f16BytesToF64(bytes);
    case "BF16":
      return bf16BytesToF64(bytes);
    default:
      throw unsupported(dtype);
  }
}
