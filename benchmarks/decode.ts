/**
 * npm run bench:decode
 *
 * Prefill (512-token prompt) and decode (256 new tokens) speed of a random
 * Qwen2-shaped checkpoint (~100M parameters by default), for F32 and BF16 weights, each
 * memory-mapped (the default) and read into huge-page memory (mmap: false).
 * Every run is its own process, so its peak RSS is its own.
 *
 * Decode is memory-bound, so each run is set against its bound: bytes read per
 * token (every weight matrix + the KV cache, F32 or BF16, at the mean decode context) /
 * measured read bandwidth. The parent measures the bandwidth (median of 5
 * passes over 1 GiB) right before and after each run and uses their mean,
 * because on a shared host it drifts by 10-20% over minutes.
 *
 * Each configuration runs --repeats times (default 3) and the table shows the
 * run with the median time/bound ratio, with the range over all runs; every run
 * is kept in the JSON.
 *
 * --quantize q8_0|q4_0|q4_k loads the checkpoint (BF16 unless --dtype says
 * otherwise) with Model.load(dir, { quantize }); bytes per token are then the
 * quantized linear weights + LM head as the kernels read them (model.info.linearBytes)
 * + the KV cache, and results go to decode[-<shape>]-<format>.json.
 *
 * --kv-cache f32|bf16|f32,bf16 sets Model.load's kvCacheDtype (default: the
 * model's default, recorded per run); with both, the repeats alternate between
 * them (f32, bf16, f32, ...) so a drifting machine load hits both alike, and each
 * run records the load average at its end.
 *
 * Options: --dtype F32|BF16, --weights mmap|read (default: all combinations),
 * --prompt N (512), --tokens N (256), --repeats N (3), --shape 100m|1.5b (the
 * latter has Qwen2.5-Coder-1.5B's dimensions; results go to decode-1.5b.json), --out FILE. Cache: DEEPGUARD_BENCH_CACHE, default
 * ~/.cache/deepguard/bench. Writes benchmarks/out/decode.json (git-ignored, so a run never
 * dirties the checkout); the recorded results were written with --out benchmarks/results/decode.json.
 */
import { execFileSync } from "node:child_process";
import { mkdir, rename, writeFile } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Model, QUANT_FORMATS, type KvCacheDtype, type QuantFormat } from "../lib/index.js";
import { native } from "../lib/native.js";
import { BENCH_SHAPES, ensureRandomCheckpoint, tensorShapes, type BenchShape, type BenchShapeName, BENCH_CACHE_DIR } from "./support/random-checkpoint.js";

type Dtype = "F32" | "BF16";
type Weights = "mmap" | "read";
type KvFlag = "f32" | "bf16" | "default";
const KV_FLAGS: Record<KvFlag, KvCacheDtype | undefined> = { f32: "float32", bf16: "bfloat16", default: undefined };

interface RunResult {
  dtype: Dtype;
  kvCacheDtype: KvCacheDtype;
  /** 1-minute load average right after the run. */
  loadAverage1m: number;
  quantize: QuantFormat | null;
  /** What BF16 weights multiplied (model.info.activations: "auto" resolved). */
  activations: "float32" | "bfloat16";
  weights: Weights;
  parameters: number;
  bytesPerDecodedToken: number;
  prefillTokens: number;
  prefillTokensPerSecond: number;
  decodeTokens: number;
  decodeTokensPerSecond: number;
  decodeMsPerToken: number;
  peakRssMiB: number;
  /** Model.load wall time (includes quantization). */
  loadSeconds: number;
}

interface Row extends RunResult {
  readGBps: number;
  copyGBps: number;
  boundTokensPerSecond: number;
  /** measured time per token / bound time per token (1.0 = at the bound). */
  ratioToBound: number;
}

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, "..", "..");
/** Bytes a decode step must read: each weight matrix once (the tied embedding as lm_head) + K and V caches. */
function bytesPerToken(s: BenchShape, dtypeSize: number, context: number, kvElemBytes: number): number {
  let weights = 0;
  for (const dims of tensorShapes(s).values()) {
    if (dims.length === 2) weights += dims.reduce((a, b) => a * b, 1);
  }
  return weights * dtypeSize + kvBytesPerToken(s, context, kvElemBytes);
}

/** The K and V caches (elements of kvElemBytes) read by one decode step at `context` positions. */
function kvBytesPerToken(s: BenchShape, context: number, kvElemBytes: number): number {
  return s.layers * 2 * s.kvHeads * (s.hidden / s.heads) * context * kvElemBytes;
}

async function runOne(
  shapeName: BenchShapeName,
  dtype: Dtype,
  weights: Weights,
  promptLen: number,
  newTokens: number,
  quantize: QuantFormat | null,
  kv: KvFlag,
): Promise<RunResult> {
  const shape = BENCH_SHAPES[shapeName];
  const dir = await ensureRandomCheckpoint(join(BENCH_CACHE_DIR, `qwen2-${shapeName}-${dtype.toLowerCase()}`), shape, dtype);
  const tLoad = performance.now();
  const kvCacheDtype = KV_FLAGS[kv];
  const model = await Model.load(dir, { mmap: weights === "mmap", ...(quantize ? { quantize } : {}), ...(kvCacheDtype ? { kvCacheDtype } : {}) });
  const loadSeconds = (performance.now() - tLoad) / 1000;
  const prompt = Array.from({ length: promptLen }, (_, i) => (i * 7919 + 13) % shape.vocab);

  // Warm-up: fault the weights in and settle the thread pool.
  const warm = model.createSession();
  await warm.eval(prompt.slice(0, 64));
  for (let i = 0; i < 4; i++) await warm.eval([i + 1]);
  warm.dispose();

  const session = model.createSession();
  let t0 = performance.now();
  let step = await session.eval(prompt, { logits: "last" });
  const prefillS = (performance.now() - t0) / 1000;

  // The generate() loop without its text handling: greedy sample, feed back.
  const sampler = native();
  t0 = performance.now();
  for (let i = 0; i < newTokens; i++) {
    const token = sampler.sampleToken(step.logits.row(0), { temperature: 0, topK: 0, topP: 1 }, 0);
    step = await session.eval([token], { logits: "last" });
  }
  const decodeS = (performance.now() - t0) / 1000;
  const context = promptLen + newTokens / 2;
  const kvElem = model.info.kvCacheDtype === "bfloat16" ? 2 : 4;
  return {
    dtype,
    kvCacheDtype: model.info.kvCacheDtype,
    loadAverage1m: loadavg()[0],
    quantize,
    activations: model.info.activations,
    loadSeconds,
    weights,
    parameters: model.info.parameterCount,
    bytesPerDecodedToken: quantize
      ? model.info.linearBytes + kvBytesPerToken(shape, context, kvElem)
      : bytesPerToken(shape, dtype === "F32" ? 4 : 2, context, kvElem),
    prefillTokens: promptLen,
    prefillTokensPerSecond: promptLen / prefillS,
    decodeTokens: newTokens,
    decodeTokensPerSecond: newTokens / decodeS,
    decodeMsPerToken: (decodeS * 1000) / newTokens,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
  };
}

async function writeAtomic(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, text);
  await rename(tmp, path);
}

function positiveInt(name: string, raw: string): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got "${raw}"`);
  return n;
}

function oneOf<T extends string>(name: string, raw: string | undefined, allowed: readonly T[]): T[] {
  if (raw === undefined) return [...allowed];
  if (!(allowed as readonly string[]).includes(raw)) throw new Error(`--${name} must be one of ${allowed.join(", ")}, got "${raw}"`);
  return [raw as T];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      dtype: { type: "string" },
      weights: { type: "string" },
      prompt: { type: "string", default: "512" },
      tokens: { type: "string", default: "256" },
      repeats: { type: "string", default: "3" },
      shape: { type: "string", default: "100m" },
      out: { type: "string" },
      quantize: { type: "string" },
      "kv-cache": { type: "string", default: "default" },
      child: { type: "boolean" },
    },
  });
  const promptLen = positiveInt("prompt", values.prompt!);
  const newTokens = positiveInt("tokens", values.tokens!);
  const repeats = positiveInt("repeats", values.repeats!);
  const dtypes = oneOf<Dtype>("dtype", values.dtype, ["F32", "BF16"]);
  const modes = oneOf<Weights>("weights", values.weights, ["mmap", "read"]);
  const [shapeName] = oneOf<BenchShapeName>("shape", values.shape, Object.keys(BENCH_SHAPES) as BenchShapeName[]);
  const quantize = values.quantize === undefined ? null : oneOf<QuantFormat>("quantize", values.quantize, QUANT_FORMATS)[0];
  // Quantized runs start from the BF16 checkpoint unless --dtype says otherwise.
  if (quantize && values.dtype === undefined) dtypes.splice(0, dtypes.length, "BF16");
  const kvs = values["kv-cache"]!.split(",").map((k) => oneOf<KvFlag>("kv-cache", k, ["f32", "bf16", "default"])[0]);
  if (values.child) {
    const r = await runOne(shapeName, dtypes[0], modes[0], promptLen, newTokens, quantize, kvs[0]);
    process.stdout.write(JSON.stringify(r) + "\n");
    return;
  }

  const sys = native().systemInfo();
  console.log(`CPU: ${cpus()[0]?.model} · ${sys.threads} threads · kernels ${sys.isa}`);
  const runs: Row[] = [];
  const table: { median: Row; lo: number; hi: number }[] = [];
  for (const dtype of dtypes) {
    for (const weights of modes) {
      const mineByKv = new Map<KvFlag, Row[]>(kvs.map((k) => [k, []]));
      for (let rep = 0; rep < repeats; rep++) for (const kv of kvs) {
        const args = ["--child", "--shape", shapeName, "--dtype", dtype, "--weights", weights, "--prompt", String(promptLen), "--tokens", String(newTokens), "--kv-cache", kv];
        if (quantize) args.push("--quantize", quantize);
        const mine = mineByKv.get(kv)!;
        const before = await native().measureBandwidth(1 << 30, 5);
        const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), ...args], {
          encoding: "utf8",
          stdio: ["ignore", "pipe", "inherit"],
        });
        const after = await native().measureBandwidth(1 << 30, 5);
        const r: RunResult = JSON.parse(out.trim().split("\n").pop()!);
        const readGBps = (before.readGBps + after.readGBps) / 2;
        const bound = (readGBps * 1e9) / r.bytesPerDecodedToken;
        mine.push({
          ...r,
          readGBps,
          copyGBps: (before.copyGBps + after.copyGBps) / 2,
          boundTokensPerSecond: bound,
          ratioToBound: bound / r.decodeTokensPerSecond,
        });
      }
      for (const mine of mineByKv.values()) {
        runs.push(...mine);
        const sorted = [...mine].sort((a, b) => a.ratioToBound - b.ratioToBound);
        table.push({ median: sorted[Math.floor(sorted.length / 2)], lo: sorted[0].ratioToBound, hi: sorted[sorted.length - 1].ratioToBound });
      }
    }
  }

  console.log(`\nmedian of ${repeats} run(s) per row; time / bound range over the runs in brackets`);
  const load = loadavg();
  console.log(`load average after the runs: ${load.map((l) => l.toFixed(2)).join(", ")}`);
  console.log("| weights | storage | KV cache | prefill tok/s | decode tok/s | ms/token | MB read/token | read GB/s | bound tok/s | time / bound | peak RSS MiB | load s |");
  console.log("|---|---|---|---|---|---|---|---|---|---|---|---|");
  for (const { median: r, lo, hi } of table) {
    console.log(
      `| ${r.quantize ? `${r.quantize} (from ${r.dtype})` : r.dtype} | ${r.weights} | ${r.kvCacheDtype} | ${r.prefillTokensPerSecond.toFixed(0)} | ${r.decodeTokensPerSecond.toFixed(1)} | ${r.decodeMsPerToken.toFixed(2)} | ${(r.bytesPerDecodedToken / 1e6).toFixed(0)} | ${r.readGBps.toFixed(1)} | ${r.boundTokensPerSecond.toFixed(1)} | ${r.ratioToBound.toFixed(2)}x [${lo.toFixed(2)}-${hi.toFixed(2)}] | ${r.peakRssMiB.toFixed(0)} | ${r.loadSeconds.toFixed(1)} |`,
    );
  }
  const report = {
    date: new Date().toISOString(),
    command: `npm run bench:decode -- ${process.argv.slice(2).join(" ")}`.trim(),
    loadAverage: load,
    cpu: cpus()[0]?.model ?? "unknown",
    threads: sys.threads,
    isa: sys.isa,
    model: { architecture: "Qwen2ForCausalLM", shape: shapeName, parameters: runs[0]?.parameters, ...BENCH_SHAPES[shapeName] },
    repeats,
    medians: table.map((t) => ({ ...t.median, ratioRange: [t.lo, t.hi] })),
    runs,
  };
  const file = `decode${shapeName === "100m" ? "" : `-${shapeName}`}${quantize ? `-${quantize}` : ""}.json`;
  const out = resolve(values.out ?? join(repoRoot, "benchmarks", "out", file));
  await writeAtomic(out, JSON.stringify(report, null, 2) + "\n");
  console.log(`\nwrote ${out}`);
}

await main();
