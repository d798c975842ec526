/**
 * npm run bench:decode
 *
 * Prefill (512-token prompt) and decode (256 new tokens) speed of a random
 * ~100M-parameter Qwen2-shaped checkpoint, F32 and BF16 weights, each in its own
 * process so peak RSS is its own. Decode is memory-bound, so each result is set
 * against the bound: measured read bandwidth / weight bytes read per token.
 * Writes benchmarks/results/decode.json.
 *
 * Options: --dtype F32|BF16 (one only), --prompt N, --tokens N,
 * DEEPGUARD_BENCH_CACHE (default ~/.cache/deepguard/bench).
 */
import { execFileSync } from "node:child_process";
import { mkdir, rename, writeFile } from "node:fs/promises";
import { homedir, cpus } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Model } from "../lib/index.js";
import { native } from "../lib/native.js";
import { ensureRandomCheckpoint, QWEN2_100M, tensorShapes } from "./support/random-checkpoint.js";

interface DtypeResult {
  dtype: string;
  parameters: number;
  weightBytes: number;
  bytesPerDecodedToken: number;
  prefillTokens: number;
  prefillTokensPerSecond: number;
  decodeTokens: number;
  decodeTokensPerSecond: number;
  decodeMsPerToken: number;
  boundTokensPerSecond: number;
  ratioToBound: number;
  peakRssMiB: number;
}

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, "..", "..");
const cacheDir = process.env.DEEPGUARD_BENCH_CACHE ?? join(homedir(), ".cache", "deepguard", "bench");

/** Bytes of every weight matrix a decode step streams (embedding row lookups excluded, lm_head included). */
function bytesPerToken(dtypeSize: number): number {
  let n = 0;
  for (const [name, dims] of tensorShapes(QWEN2_100M)) {
    if (name === "model.embed_tokens.weight" || dims.length === 2) n += dims.reduce((a, b) => a * b, 1);
  }
  return n * dtypeSize;
}

async function runOne(dtype: "F32" | "BF16", promptLen: number, newTokens: number, readGBps: number): Promise<DtypeResult> {
  const dir = await ensureRandomCheckpoint(join(cacheDir, `qwen2-100m-${dtype.toLowerCase()}`), QWEN2_100M, dtype);
  const model = await Model.load(dir);
  const prompt = Array.from({ length: promptLen }, (_, i) => (i * 7919 + 13) % QWEN2_100M.vocab);

  // Warm-up: fault the mapping in and settle the thread pool.
  const warm = model.createSession();
  await warm.eval(prompt.slice(0, 64));
  for (let i = 0; i < 4; i++) await warm.eval([i + 1]);

  const session = model.createSession();
  let t0 = performance.now();
  let step = await session.eval(prompt, { logits: "last" });
  const prefillS = (performance.now() - t0) / 1000;

  const sampler = native();
  t0 = performance.now();
  for (let i = 0; i < newTokens; i++) {
    const token = sampler.sampleToken(step.logits.row(0), { temperature: 0, topK: 0, topP: 1 }, 0);
    step = await session.eval([token], { logits: "last" });
  }
  const decodeS = (performance.now() - t0) / 1000;

  const perToken = bytesPerToken(dtype === "F32" ? 4 : 2);
  const decodeTps = newTokens / decodeS;
  const bound = (readGBps * 1e9) / perToken;
  return {
    dtype,
    parameters: model.info.parameterCount,
    weightBytes: model.info.weightBytes,
    bytesPerDecodedToken: perToken,
    prefillTokens: promptLen,
    prefillTokensPerSecond: promptLen / prefillS,
    decodeTokens: newTokens,
    decodeTokensPerSecond: decodeTps,
    decodeMsPerToken: (decodeS * 1000) / newTokens,
    boundTokensPerSecond: bound,
    ratioToBound: bound / decodeTps,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
  };
}

async function writeAtomic(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, text);
  await rename(tmp, path);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      dtype: { type: "string" },
      prompt: { type: "string", default: "512" },
      tokens: { type: "string", default: "256" },
      "read-gbps": { type: "string" },
      child: { type: "boolean" },
    },
  });
  const promptLen = Number(values.prompt);
  const newTokens = Number(values.tokens);
  if (!Number.isInteger(promptLen) || promptLen < 1 || !Number.isInteger(newTokens) || newTokens < 1) {
    throw new Error("--prompt and --tokens must be positive integers");
  }
  if (values.child) {
    const r = await runOne(values.dtype as "F32" | "BF16", promptLen, newTokens, Number(values["read-gbps"]));
    process.stdout.write(JSON.stringify(r) + "\n");
    return;
  }

  const sys = native().systemInfo();
  const bw = await native().measureBandwidth(1 << 30, 5);
  console.log(`CPU: ${cpus()[0]?.model} · ${sys.threads} threads · kernels ${sys.isa}`);
  console.log(`memory bandwidth (1 GiB, ${sys.threads} threads): read ${bw.readGBps.toFixed(1)} GB/s, copy ${bw.copyGBps.toFixed(1)} GB/s`);

  const dtypes = values.dtype ? [values.dtype] : ["F32", "BF16"];
  const results: DtypeResult[] = [];
  for (const dtype of dtypes) {
    if (dtype !== "F32" && dtype !== "BF16") throw new Error(`--dtype must be F32 or BF16, got ${dtype}`);
    const out = execFileSync(
      process.execPath,
      [fileURLToPath(import.meta.url), "--child", "--dtype", dtype, "--prompt", String(promptLen), "--tokens", String(newTokens), "--read-gbps", String(bw.readGBps)],
      { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] },
    );
    results.push(JSON.parse(out.trim().split("\n").pop()!));
  }

  console.log("\n| dtype | params | prefill tok/s | decode tok/s | ms/token | bound tok/s | bound / measured | peak RSS MiB |");
  console.log("|---|---|---|---|---|---|---|---|");
  for (const r of results) {
    console.log(
      `| ${r.dtype} | ${(r.parameters / 1e6).toFixed(1)}M | ${r.prefillTokensPerSecond.toFixed(1)} | ${r.decodeTokensPerSecond.toFixed(1)} | ${r.decodeMsPerToken.toFixed(2)} | ${r.boundTokensPerSecond.toFixed(1)} | ${r.ratioToBound.toFixed(2)}x | ${r.peakRssMiB.toFixed(0)} |`,
    );
  }
  const report = {
    date: new Date().toISOString(),
    cpu: cpus()[0]?.model ?? "unknown",
    threads: sys.threads,
    isa: sys.isa,
    model: { architecture: "Qwen2ForCausalLM", ...QWEN2_100M },
    memoryBandwidth: bw,
    results,
  };
  await writeAtomic(join(repoRoot, "benchmarks", "results", "decode.json"), JSON.stringify(report, null, 2) + "\n");
  console.log(`\nwrote benchmarks/results/decode.json`);
}

await main();
