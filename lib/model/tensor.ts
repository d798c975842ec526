/** A row-major f32 matrix view: logits [rows][vocab] or hidden states [tokens][hidden]. */
export class Matrix {
  constructor(
    readonly data: Float32Array,
    readonly rows: number,
    readonly cols: number,
  ) {
    if (data.length !== rows * cols) throw new RangeError(`Matrix: ${data.length} values for ${rows}x${cols}`);
  }

  /** Row i as a view (no copy). */
  row(i: number): Float32Array {
    if (!Number.isInteger(i) || i < 0 || i >= this.rows) throw new RangeError(`row ${i} out of range [0, ${this.rows})`);
    return this.data.subarray(i * this.cols, (i + 1) * this.cols);
  }

  /** Nested plain arrays (full f32 values as JS numbers), e.g. for JSON output. */
  toArray(): number[][] {
    const out: number[][] = [];
    for (let i = 0; i < this.rows; i++) out.push(Array.from(this.row(i)));
    return out;
  }
}
