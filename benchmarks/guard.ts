/**
 * npm run bench:guard
 *
 * What re-scoring costs next to decoding. The guard (attention aggregation over
 * 4 layers + the analyzer, aggregator weights f32) scores from hidden states
 * captured during decoding, so its cost is set against decode steps of the
 * ~100M bench model (BF16, weights read into memory, the top 4 hidden states
 * captured each step, as guided generation does):
 *
 *   one token:   one scoreHidden call for 1 new token  vs  one decode step (1 sequence)
 *   re-score:    one scoreHidden call for 64 new tokens of B sequences
 *                vs  64 batched decode steps of the same B sequences, B = 1, 8, 32
 *
 * Goals (issue 5): re-score < 1% of the 64 steps; one token < 5% of one step.
 * Two paths are timed: Guard.scoreHidden (the training-safe path, which reads
 * the live parameters: four d x d products per token) and Guard.scorer()'s
 * frozen copy (attention folded into fc1: one d x d and one 512 x d product),
 * which is what guided decoding uses; the goals are judged on the scorer.
 * Guards at hidden 768 (the 100M model's) and 1536 (Qwen2.5-Coder-1.5B's, on the
 * cached 1.5B-shaped random checkpoint, mmapped; only its shape is used unless
 * --decode-1.5b also times its decode steps). Every timing is the median of
 * --repeats runs; the load average is recorded with the results.
 *
 * Options: --repeats N (5), --steps N (64), --prompt N (128), --decode-1.5b.
 * Cache: DEEPGUARD_BENCH_CACHE, default ~/.cache/deepguard/bench.
 * Writes benchmarks/out/guard.json (git-ignored) or --out FILE; the recorded results
 * are benchmarks/results/guard.json.
 */
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Guard, Model, type HiddenBatchItem } from "../lib/index.js";
import { native } from "../lib/native.js";
import { BENCH_SHAPES, ensureRandomCheckpoint, BENCH_CACHE_DIR } from "./support/random-checkpoint.js";
import { defaultOutput, writeResult } from "./support/output.js";

const BATCHES = [1, 8, 32];
const LAYERS = [-4, -3, -2, -1];

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** ms per batched decode step of B sequences (median over repeats), capturing the top 4 hidden states. */
async function decodeStepMs(model: Model, B: number, steps: number, promptLen: number, repeats: number): Promise<number[]> {
  const vocab = model.config.vocabSize;
  const out: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const sessions = Array.from({ length: B }, () => model.createSession());
    await model.evalBatch(
      sessions.map((session, b) => ({ session, tokens: Array.from({ length: promptLen }, (_, i) => (i * 7919 + b * 131 + 13) % vocab) })),
      { logits: "none" },
    );
    const t0 = performance.now();
    for (let s = 0; s < steps; s++) {
      await model.evalBatch(sessions.map((session, b) => ({ session, tokens: [(s * 31 + b * 17 + 5) % vocab] })), {
        logits: "last",
        hiddenStates: LAYERS,
      });
    }
    out.push((performance.now() - t0) / steps);
    for (const s of sessions) s.dispose();
  }
  return out;
}

function randomBatch(B: number, T: number, d: number, vocab: number, seed: number): HiddenBatchItem[] {
  let x = seed;
  const next = () => ((x = (Math.imul(x, 1664525) + 1013904223) >>> 0) / 4294967296 - 0.5) * 4;
  return Array.from({ length: B }, (_, b) => ({
    ids: Int32Array.from({ length: T }, (_, t) => (b * 977 + t * 31) % vocab),
    hidden: LAYERS.map(() => Float32Array.from({ length: T * d }, next)),
  }));
}

interface Scores {
  scoreHidden(batch: HiddenBatchItem[]): Promise<unknown>;
}

/** ms per scoreHidden call (median of repeats, each the mean of `calls` calls). */
async function scoreMs(guard: Scores, batch: HiddenBatchItem[], calls: number, repeats: number): Promise<number[]> {
  for (let i = 0; i < 3; i++) await guard.scoreHidden(batch);
  const out: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) await guard.scoreHidden(batch);
    out.push((performance.now() - t0) / calls);
  }
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      repeats: { type: "string", default: "5" },
      steps: { type: "string", default: "64" },
      prompt: { type: "string", default: "128" },
      "decode-1.5b": { type: "boolean" },
      out: { type: "string", default: defaultOutput("guard") },
    },
  });
  const repeats = Number(values.repeats), steps = Number(values.steps), promptLen = Number(values.prompt);
  for (const [k, v] of [["repeats", repeats], ["steps", steps], ["prompt", promptLen]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`--${k} must be a positive integer`);
  }
  const sys = native().systemInfo();
  const loadBefore = loadavg();
  console.log(`CPU: ${cpus()[0]?.model} · ${sys.threads} threads · kernels ${sys.isa} · load average ${loadBefore.map((l) => l.toFixed(2)).join(" ")}`);

  const small = await Model.load(await ensureRandomCheckpoint(join(BENCH_CACHE_DIR, "qwen2-100m-bf16"), BENCH_SHAPES["100m"], "BF16"), { mmap: false });
  const big = await Model.load(await ensureRandomCheckpoint(join(BENCH_CACHE_DIR, "qwen2-1.5b-bf16"), BENCH_SHAPES["1.5b"], "BF16"));

  const decode: Record<string, { B: number; msPerStep: number; runs: number[] }[]> = { "100m": [] };
  for (const B of BATCHES) {
    const runs = await decodeStepMs(small, B, steps, promptLen, Math.min(repeats, 3));
    decode["100m"].push({ B, msPerStep: median(runs), runs });
    console.log(`decode 100m BF16, ${B} sequence(s): ${median(runs).toFixed(2)} ms per step`);
  }
  if (values["decode-1.5b"]) {
    decode["1.5b"] = [];
    const runs = await decodeStepMs(big, 1, Math.min(steps, 16), promptLen, Math.min(repeats, 3));
    decode["1.5b"].push({ B: 1, msPerStep: median(runs), runs });
    console.log(`decode 1.5b BF16, 1 sequence: ${median(runs).toFixed(2)} ms per step`);
  }
  const stepMs = (B: number) => decode["100m"].find((r) => r.B === B)!.msPerStep;

  const guards = [];
  for (const model of [small, big]) {
    const d = model.config.hiddenSize;
    const guard = Guard.create(model, { layers: LAYERS, aggregation: "attention", seed: 1 });
    const scorer = await guard.scorer();
    for (const [path, impl] of [["scorer", scorer], ["scoreHidden", guard]] as const) {
      const one = await scoreMs(impl, randomBatch(1, 1, d, model.config.vocabSize, 1), 50, repeats);
      const oneMs = median(one);
      const rescore = [];
      for (const B of BATCHES) {
        const runs = await scoreMs(impl, randomBatch(B, steps, d, model.config.vocabSize, B), B >= 32 ? 2 : 5, repeats);
        const ms = median(runs);
        const ratio = ms / (steps * stepMs(B));
        rescore.push({ B, tokens: B * steps, ms, runs, ratioTo64DecodeSteps: ratio, goalMet: ratio < 0.01 });
      }
      const oneRatio = oneMs / stepMs(1);
      guards.push({
        hidden: d,
        layers: 4,
        aggregation: "attention",
        path,
        oneToken: { ms: oneMs, runs: one, ratioToDecodeStep: oneRatio, goalMet: oneRatio < 0.05 },
        rescore,
        ...(decode["1.5b"] && d === 1536 ? { oneTokenRatioTo15bDecodeStep: oneMs / decode["1.5b"][0].msPerStep } : {}),
      });
      console.log(`\nguard hidden ${d}, ${path}: one token ${oneMs.toFixed(3)} ms = ${(100 * oneRatio).toFixed(2)}% of a decode step (goal < 5%)`);
      console.log("| sequences | tokens | re-score ms | 64 decode steps ms | ratio (goal < 1%) |");
      console.log("|---|---|---|---|---|");
      for (const r of rescore) {
        console.log(`| ${r.B} | ${r.tokens} | ${r.ms.toFixed(2)} | ${(steps * stepMs(r.B)).toFixed(0)} | ${(100 * r.ratioTo64DecodeSteps).toFixed(2)}% |`);
      }
    }
  }
  small.dispose();
  big.dispose();
  const loadAfter = loadavg();
  const report = {
    date: new Date().toISOString(),
    command: "npm run bench:guard",
    cpu: cpus()[0]?.model ?? "unknown",
    threads: sys.threads,
    isa: sys.isa,
    loadAverage: { before: loadBefore, after: loadAfter },
    decodeModel: { shape: "100m", dtype: "BF16", weights: "read", capturedLayers: LAYERS, promptTokens: promptLen, ...BENCH_SHAPES["100m"] },
    steps,
    repeats,
    decode,
    guards,
  };
  const path = await writeResult(values.out!, report);
  console.log(`\nload average after ${loadAfter.map((l) => l.toFixed(2)).join(" ")}; wrote ${path}`);
}

await main();
