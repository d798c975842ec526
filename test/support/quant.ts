/**
 * Decodes block-quantized matrices from the byte layouts documented in
 * native/quant/formats.h, native/quant/layout.h and the README, independently
 * of the native code.
 */
export type Format = "q8_0" | "q4_0" | "q4_k";
export const QK: Record<Format, number> = { q8_0: 32, q4_0: 32, q4_k: 256 };
export const BLOCK_BYTES: Record<Format, number> = { q8_0: 34, q4_0: 18, q4_k: 144 };
/** Bytes of a block's header (its scales); the rest of the block is its codes. */
export const HEADER_BYTES: Record<Format, number> = { q8_0: 2, q4_0: 2, q4_k: 16 };
/** Rows per row group of a quantized matrix. */
export const GROUP_ROWS = 16;

export function f16(bytes: Uint8Array, o: number): number {
  const h = bytes[o] | (bytes[o + 1] << 8);
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 31;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/**
 * One block decoded from the documented layout, its header at byte o and its
 * codes at byte c: values, and the largest rounding step of each element.
 */
function decodeBlock(f: Format, b: Uint8Array, o: number, c: number): { w: number[]; step: number[] } {
  const w: number[] = [];
  const step: number[] = [];
  if (f === "q8_0") {
    const d = f16(b, o);
    for (let i = 0; i < 32; i++) {
      w.push(d * ((b[c + i] << 24) >> 24));
      step.push(Math.abs(d));
    }
  } else if (f === "q4_0") {
    const d = f16(b, o);
    for (let i = 0; i < 32; i++) {
      const n = i < 16 ? b[c + i] & 15 : b[c + i - 16] >> 4;
      w.push(d * (n - 8));
      step.push(Math.abs(d));
    }
  } else {
    const d = f16(b, o);
    const dmin = f16(b, o + 2);
    const s = b.subarray(o + 4, o + 16);
    for (let j = 0; j < 8; j++) {
      const sc = j < 4 ? s[j] & 63 : (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
      const m = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
      for (let i = 0; i < 32; i++) {
        const byte = b[c + 32 * (j >> 1) + i];
        const n = j & 1 ? byte >> 4 : byte & 15;
        w.push(d * sc * n - dmin * m);
        step.push(d * sc + dmin);
      }
    }
  }
  return { w, step };
}

export function decodeMatrix(f: Format, bytes: Uint8Array, rows: number, cols: number): { w: Float64Array; step: Float64Array } {
  const w = new Float64Array(rows * cols);
  const step = new Float64Array(rows * cols);
  const per = cols / QK[f];
  const B = BLOCK_BYTES[f];
  const H = HEADER_BYTES[f];
  for (let r = 0; r < rows; r++) {
    // Row r sits in a group of n rows starting at row g0: block column k of
    // the group holds the n headers, then the n code arrays.
    const g0 = Math.floor(r / GROUP_ROWS) * GROUP_ROWS;
    const n = Math.min(GROUP_ROWS, rows - g0);
    const j = r - g0;
    for (let k = 0; k < per; k++) {
      const column = g0 * per * B + k * n * B;
      const blk = decodeBlock(f, bytes, column + j * H, column + n * H + j * (B - H));
      w.set(blk.w, r * cols + k * QK[f]);
      step.set(blk.step, r * cols + k * QK[f]);
    }
  }
  return { w, step };
}

