/**
 * Writes {"logits": [rows][vocab], "hiddenStates": [L+1][seq][hidden]} as JSON, row
 * (rows: every token, the last one, or none, as --logits chose)
 * by row, so a long sequence never builds one giant string. Values are the full
 * f32 values (shortest round-trip decimal), as JSON.stringify prints them.
 */
import type { Writable } from "node:stream";
import type { ForwardResult } from "../model/model.js";
import type { Matrix } from "../model/tensor.js";

function rowJson(row: Float32Array): string {
  let s = "[";
  for (let i = 0; i < row.length; i++) s += (i ? "," : "") + JSON.stringify(row[i]);
  return s + "]";
}

async function write(out: Writable, s: string): Promise<void> {
  if (!out.write(s)) await new Promise<void>((r) => out.once("drain", () => r()));
}

async function writeMatrix(out: Writable, m: Matrix): Promise<void> {
  await write(out, "[");
  for (let r = 0; r < m.rows; r++) await write(out, (r ? "," : "") + rowJson(m.row(r)));
  await write(out, "]");
}

export async function writeForwardJson(out: Writable, result: ForwardResult, numLayers: number): Promise<void> {
  await write(out, '{"logits":');
  await writeMatrix(out, result.logits);
  await write(out, ',"hiddenStates":[');
  for (let l = 0; l <= numLayers; l++) {
    if (l) await write(out, ",");
    await writeMatrix(out, result.hiddenStates.get(l)!);
  }
  await write(out, "]}\n");
}
