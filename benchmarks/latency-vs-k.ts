/**
 * npm run bench:k [-- --k 1,4,64,inf] [--tokens 256] [--prompts 2] [--repeats 2] [--dtype F32|BF16] [--guard <dir>]
 *
 * Latency versus re-scoring interval k on the ~100M random Qwen2-shaped bench
 * checkpoint (benchmarks/support/random-checkpoint.ts; cached in
 * DEEPGUARD_BENCH_CACHE, default ~/.cache/deepguard/bench): plain generation,
 * guided with captured hidden states, and guided re-running a full forward at
 * every re-score (the reference way). Without --guard, a seeded random guard
 * of the default shape over the top 4 layers. Prints the table and writes
 * latency-vs-k.json and latency-vs-k.svg into --out DIR (default benchmarks/out/,
 * git-ignored; the recorded results were written with --out benchmarks/results).
 */
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { benchKCommand } from "../lib/cli/guided.js";
import { BENCH_SHAPES, ensureRandomCheckpoint } from "./support/random-checkpoint.js";

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const args = process.argv.slice(2);
const at = args.indexOf("--dtype");
const dtype = at >= 0 ? args.splice(at, 2)[1] : "F32";
if (dtype !== "F32" && dtype !== "BF16") throw new Error(`--dtype must be F32 or BF16, got ${dtype}`);
const cache = process.env.DEEPGUARD_BENCH_CACHE ?? join(homedir(), ".cache", "deepguard", "bench");
const dir = await ensureRandomCheckpoint(join(cache, `qwen2-100m-${dtype.toLowerCase()}`), BENCH_SHAPES["100m"], dtype);
process.env.DEEPGUARD_BENCH_COMMAND ??= `npm run bench:k -- ${args.join(" ")}`.trim();
const outAt = args.indexOf("--out");
const out = outAt >= 0 ? args.splice(outAt, 2)[1] : join(repoRoot, "benchmarks", "out");
await benchKCommand([dir, "--out", out, ...args]);
process.stdout.write(`wrote ${join(out, "latency-vs-k.json")} and latency-vs-k.svg\n`);
