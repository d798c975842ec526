/**
 * npm run bench:serve
 *
 * Serving throughput and latency through the scheduler: max(16, c) requests
 * (greedy, token ids, prompts of mixed lengths cycling through PROMPT_MIX) with
 * c = 1, 4, 16 and 64 of them in flight at a time (each of c clients sends its
 * next request when the previous one is done), so every level does the same
 * kind of work: the total generated tokens/s (prefill time included), time to
 * first token from each request's start (median, p95),
 * and the latency of a small fs.readFile issued back to back during the run
 * (p50/p99): it needs libuv's worker pool, which inference must never occupy.
 *
 * Models: random Qwen2-shaped BF16 checkpoints, the ~100M bench shape and
 * Qwen2.5-Coder-0.5B's shape (created once, cached in DEEPGUARD_BENCH_CACHE or
 * ~/.cache/deepguard/bench). Each (shape, concurrency) runs --repeats times
 * (default 3); the table shows the median run by tokens/s, every run is kept.
 *
 * Options: --shape 100m|0.5b (default both), --concurrency 1,4,16,64,
 * --tokens N new tokens per request (default 32 for 100m, 16 for 0.5b),
 * --repeats N, --out FILE (default benchmarks/out/serve.json, git-ignored; the recorded
 * results were written with --out benchmarks/results/serve.json).
 */
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { cpus, loadavg, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Model } from "../lib/index.js";
import { native } from "../lib/native.js";
import { BENCH_SHAPES, ensureRandomCheckpoint, type BenchShapeName, BENCH_CACHE_DIR } from "./support/random-checkpoint.js";

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, "..", "..");
/** Prompt lengths cycled through by the requests of a run. */
const PROMPT_MIX = [16, 48, 128, 32, 96, 8, 64, 24];

interface Run {
  shape: BenchShapeName;
  concurrency: number;
  requests: number;
  newTokensPerRequest: number;
  promptTokens: number;
  seconds: number;
  tokensPerSecond: number;
  ttftMedianMs: number;
  ttftP95Ms: number;
  readFileSamples: number;
  readFileP50Ms: number;
  readFileP99Ms: number;
  readFileMaxMs: number;
  iterations: number;
  loadAverage: number;
}

function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

async function runOnce(model: Model, shape: BenchShapeName, concurrency: number, newTokens: number, probeFile: string): Promise<Run> {
  const vocab = model.config.vocabSize;
  const prompts = Array.from({ length: Math.max(16, concurrency) }, (_, r) =>
    Array.from({ length: PROMPT_MIX[r % PROMPT_MIX.length] }, (_, i) => (i * 7919 + r * 104729 + 13) % vocab),
  );
  let running = true;
  const probe: number[] = [];
  const prober = (async () => {
    while (running) {
      const t = performance.now();
      await readFile(probeFile);
      probe.push(performance.now() - t);
      await new Promise((r) => setTimeout(r, 1));
    }
  })();
  const it0 = model.servingStats.iterations;
  const t0 = performance.now();
  const ttft: number[] = [];
  let tokens = 0;
  let next = 0;
  const client = async () => {
    while (next < prompts.length) {
      const p = prompts[next++];
      const start = performance.now();
      let first = true;
      for await (const piece of model.generate(p, { maxTokens: newTokens, temperature: 0, stopOnEos: false })) {
        if (first && piece.tokens.length > 0) {
          ttft.push(performance.now() - start);
          first = false;
        }
        tokens += piece.tokens.length;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, client));
  const seconds = (performance.now() - t0) / 1000;
  running = false;
  await prober;
  return {
    shape,
    concurrency,
    requests: prompts.length,
    newTokensPerRequest: newTokens,
    promptTokens: prompts.reduce((n, p) => n + p.length, 0),
    seconds,
    tokensPerSecond: tokens / seconds,
    ttftMedianMs: quantile(ttft, 0.5),
    ttftP95Ms: quantile(ttft, 0.95),
    readFileSamples: probe.length,
    readFileP50Ms: quantile(probe, 0.5),
    readFileP99Ms: quantile(probe, 0.99),
    readFileMaxMs: Math.max(...probe),
    iterations: model.servingStats.iterations - it0,
    loadAverage: loadavg()[0],
  };
}

function list(name: string, raw: string): number[] {
  const xs = raw.split(",").map(Number);
  if (xs.some((x) => !Number.isInteger(x) || x < 1)) throw new Error(`--${name} must be positive integers separated by commas, got "${raw}"`);
  return xs;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      shape: { type: "string" },
      concurrency: { type: "string", default: "1,4,16,64" },
      tokens: { type: "string" },
      repeats: { type: "string", default: "3" },
      activations: { type: "string", default: "auto" },
      out: { type: "string", default: join(repoRoot, "benchmarks", "out", "serve.json") },
    },
  });
  const shapes = (values.shape ? [values.shape] : ["100m", "0.5b"]) as BenchShapeName[];
  for (const s of shapes) if (!(s in BENCH_SHAPES)) throw new Error(`--shape must be one of ${Object.keys(BENCH_SHAPES).join(", ")}`);
  const levels = list("concurrency", values.concurrency!);
  const activations = values.activations as "auto" | "float32" | "bfloat16";
  if (!["auto", "float32", "bfloat16"].includes(activations)) throw new Error(`--activations must be auto, float32 or bfloat16`);
  const [repeats] = list("repeats", values.repeats!);
  const probeFile = join(tmpdir(), `deepguard-bench-probe-${process.pid}.txt`);
  await writeFile(probeFile, "x".repeat(700));
  const sys = native().systemInfo();
  console.log(`CPU: ${cpus()[0]?.model} · ${sys.threads} threads · kernels ${sys.isa} · load average ${loadavg()[0].toFixed(2)}`);

  const runs: Run[] = [];
  const medians: Run[] = [];
  const activationsUsed: Record<string, string> = {};
  for (const shape of shapes) {
    const newTokens = values.tokens ? list("tokens", values.tokens)[0] : shape === "100m" ? 32 : 16;
    const dir = await ensureRandomCheckpoint(join(BENCH_CACHE_DIR, `qwen2-${shape}-bf16`), BENCH_SHAPES[shape], "BF16");
    const model = await Model.load(dir, { activations });
    activationsUsed[shape] = model.info.activations;
    await model.complete([1, 2, 3, 4], { maxTokens: 4, stopOnEos: false }); // fault the weights in
    for (const c of levels) {
      const mine: Run[] = [];
      for (let r = 0; r < repeats; r++) mine.push(await runOnce(model, shape, c, newTokens, probeFile));
      runs.push(...mine);
      const m = [...mine].sort((a, b) => a.tokensPerSecond - b.tokensPerSecond)[Math.floor(mine.length / 2)];
      medians.push(m);
      console.log(
        `${shape} x${c}: ${m.tokensPerSecond.toFixed(1)} tok/s, TTFT median ${m.ttftMedianMs.toFixed(0)} ms p95 ${m.ttftP95Ms.toFixed(0)} ms, readFile p99 ${m.readFileP99Ms.toFixed(2)} ms (load ${m.loadAverage.toFixed(1)})`,
      );
    }
    model.dispose();
  }

  console.log(`\nmedian of ${repeats} run(s) by tokens/s`);
  console.log("| model | concurrent | tok/s | vs 1 stream | TTFT median ms | TTFT p95 ms | readFile p50 ms | readFile p99 ms | load avg |");
  console.log("|---|---|---|---|---|---|---|---|---|");
  for (const m of medians) {
    const single = medians.find((x) => x.shape === m.shape && x.concurrency === 1);
    console.log(
      `| ${m.shape} | ${m.concurrency} | ${m.tokensPerSecond.toFixed(1)} | ${single ? (m.tokensPerSecond / single.tokensPerSecond).toFixed(2) + "x" : "-"} | ${m.ttftMedianMs.toFixed(0)} | ${m.ttftP95Ms.toFixed(0)} | ${m.readFileP50Ms.toFixed(2)} | ${m.readFileP99Ms.toFixed(2)} | ${m.loadAverage.toFixed(1)} |`,
    );
  }
  const report = {
    date: new Date().toISOString(),
    command: `npm run bench:serve -- ${process.argv.slice(2).join(" ")}`.trim(),
    cpu: cpus()[0]?.model ?? "unknown",
    threads: sys.threads,
    isa: sys.isa,
    promptMix: PROMPT_MIX,
    models: Object.fromEntries(shapes.map((s) => [s, { architecture: "Qwen2ForCausalLM", dtype: "BF16", activations: activationsUsed[s], ...BENCH_SHAPES[s] }])),
    repeats,
    medians,
    runs,
  };
  const out = resolve(values.out!);
  await mkdir(dirname(out), { recursive: true });
  const tmp = `${out}.tmp-${process.pid}`;
  await writeFile(tmp, JSON.stringify(report, null, 2) + "\n");
  await rename(tmp, out);
  console.log(`\nwrote ${out}`);
}

await main();
