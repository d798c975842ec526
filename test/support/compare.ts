/** Error measures for comparing engine output with float64 references. */

/** max |a - b| / max |b|: error relative to the reference's scale. */
export function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} vs ${expected.length}`);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (!(d <= diff)) diff = d; // NaN propagates as a failure
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  return scale === 0 ? diff : diff / scale;
}

/** Concatenates rows into one Float64Array. */
export function flatten(rows: ArrayLike<number>[]): Float64Array {
  const n = rows.reduce((s, r) => s + r.length, 0);
  const out = new Float64Array(n);
  let o = 0;
  for (const r of rows) {
    out.set(Array.from(r), o);
    o += r.length;
  }
  return out;
}

/** Deterministic pseudo-random token ids in [0, vocab). */
export function randomIds(n: number, vocab: number, seed: number): number[] {
  let x = seed >>> 0;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out.push(x % vocab);
  }
  return out;
}
