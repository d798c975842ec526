/**
 * Where a benchmark writes its JSON: `--out FILE`, or benchmarks/out/NAME.json, which
 * git ignores, so a run never dirties the checkout. The recorded results in
 * benchmarks/results/ are written on purpose with `--out benchmarks/results/NAME.json`.
 */
import { mkdir } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { writeJsonAtomic } from "../../lib/io/atomic.js";

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

export function defaultOutput(name: string): string {
  return join(repoRoot, "benchmarks", "out", `${name}.json`);
}

/** Writes `value` as JSON atomically at `path` (folders created); returns the absolute path. */
export async function writeResult(path: string, value: unknown): Promise<string> {
  const out = resolve(path);
  await mkdir(dirname(out), { recursive: true });
  await writeJsonAtomic(out, value);
  return out;
}
