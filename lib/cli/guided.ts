/**
 * deepguard generate ... --guard <dir> (or the default model): runGuidedGeneration,
 *   called by lib/cli/generate.ts.
 * deepguard bench-k [<model-dir>] [--guard <dir>] [--k 1,2,4,8,16,32,64,128,inf] [--tokens 256] [--json] [--out <dir>]
 *   Latency versus k (lib/generate/latency.ts): a table (or with --json one
 *   object {"rows": [...]}); --out writes latency-vs-k.json and latency-vs-k.svg there.
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { DeepGuardError } from "../errors.js";
import { Generator } from "../generate/guided.js";
import { DEFAULT_KS, STRATEGIES, type Strategy, latencySvg, latencyTable, measureLatencyVsK, parseKList, randomBenchGuard, type LatencyReport } from "../generate/latency.js";
import { Guard } from "../guard/guard.js";
import { writeFileAtomic, writeJsonAtomic } from "../io/atomic.js";
import { Model } from "../model/model.js";
import { splitModelDir, type UsageFactory } from "./args.js";
import { modelLoadOptions, QUANTIZE_FLAGS } from "./load-options.js";

export const BENCH_K_USAGE = "deepguard bench-k [<model-dir>] [--guard <dir>] [--k 1,2,4,8,16,32,64,128,inf] [--tokens 256] [--prompts 2] [--repeats 2] [--strategies plain,captured,reforward] [--json] [--out <dir>]";

const benchUsage: UsageFactory = (message) => new DeepGuardError("ERR_USAGE", `${message}\nusage: ${BENCH_K_USAGE}`);

/** A number flag checked only for being a number; its range is the API's to check (ERR_ARGUMENT). */
function num(name: string, raw: string | undefined, integer: boolean, error: UsageFactory): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(n) || (integer && !Number.isInteger(n))) {
    throw error(`--${name} must be ${integer ? "an integer" : "a number"}, got "${raw}"`);
  }
  return n;
}

/** The guided-only flags of `deepguard generate` (lib/cli/generate.ts parses them with the rest). */
export const GUIDED_FLAGS = {
  guard: { type: "string" },
  interval: { type: "string" },
  strength: { type: "string" },
  n: { type: "string" },
  candidates: { type: "string" },
} as const;

export interface GuidedFlagValues {
  interval?: string;
  strength?: string;
  n?: string;
  candidates?: string;
}

/**
 * Guided generation for `deepguard generate`: sample 1 streams to stdout (or
 * every sample, one after another, with --n > 1); each final score to stderr.
 * The guided flags' values are checked by Generator (ERR_ARGUMENT naming them).
 */
export async function runGuidedGeneration(
  model: Model,
  guard: Guard,
  prompt: string | number[],
  values: GuidedFlagValues,
  sampling: { maxTokens?: number; temperature?: number; topP?: number; topK?: number; seed?: number; signal: AbortSignal },
  error: UsageFactory,
): Promise<void> {
  const interval = values.interval === undefined ? undefined : /^inf(inity)?$/i.test(values.interval) ? Infinity : num("interval", values.interval, true, error);
  const n = num("n", values.n, true, error) ?? 1;
  const gen = new Generator(model, guard, {
    interval,
    strength: num("strength", values.strength, false, error),
    candidates: num("candidates", values.candidates, true, error),
  });
  if (n === 1) {
    const it = gen.stream(prompt, sampling);
    let r = await it.next();
    while (!r.done) {
      process.stdout.write(r.value.text);
      r = await it.next();
    }
    process.stdout.write("\n");
    printScores(r.value.samples);
    return;
  }
  const r = await gen.complete(prompt, { ...sampling, n });
  r.samples.forEach((s, i) => process.stdout.write(`--- sample ${i + 1} (seed ${s.seed})\n${s.text}\n`));
  printScores(r.samples);
}

function printScores(samples: { score: number; seed: number; candidates?: { intervals: number; changed: number } }[]): void {
  samples.forEach((s, i) => {
    const cand = s.candidates ? ` (candidates changed ${s.candidates.changed} of ${s.candidates.intervals} choices)` : "";
    process.stderr.write(`sample ${i + 1}: score ${s.score.toFixed(4)} (seed ${s.seed})${cand}\n`);
  });
}

export async function benchKCommand(args: string[]): Promise<LatencyReport> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      ...QUANTIZE_FLAGS,
      guard: { type: "string" },
      k: { type: "string" },
      tokens: { type: "string" },
      prompts: { type: "string" },
      repeats: { type: "string" },
      "prompt-tokens": { type: "string" },
      strategies: { type: "string" },
      json: { type: "boolean" },
      out: { type: "string" },
    },
    allowPositionals: true,
  });
  const loadOptions = modelLoadOptions(values); // flags are checked before any file is read
  const { modelDir } = splitModelDir(positionals, 0, benchUsage, "bench-k takes at most one model directory");
  const ks = values.k === undefined ? DEFAULT_KS : parseKList(values.k);
  const strategies = values.strategies === undefined ? undefined : values.strategies.split(",").map((s) => s.trim());
  if (strategies && !strategies.every((s) => (STRATEGIES as readonly string[]).includes(s))) {
    throw benchUsage(`--strategies takes a comma list of ${STRATEGIES.join(", ")}, got "${values.strategies}"`);
  }
  const model = await Model.load(modelDir, loadOptions);
  const guard = values.guard ? await Guard.load(values.guard, model) : await randomBenchGuard(model);
  const report = await measureLatencyVsK(model, guard, {
    ks,
    strategies: strategies as Strategy[] | undefined,
    tokens: num("tokens", values.tokens, true, benchUsage),
    prompts: num("prompts", values.prompts, true, benchUsage),
    repeats: num("repeats", values.repeats, true, benchUsage),
    promptTokens: num("prompt-tokens", values["prompt-tokens"], true, benchUsage),
    onRun: values.json ? undefined : ({ strategy, k, ms, cpuMs }) => process.stderr.write(`  ${strategy}${k === null ? "" : ` k=${k}`}: ${ms.toFixed(0)} ms (cpu ${cpuMs.toFixed(0)} ms)\n`),
  });
  if (values.out) await writeLatencyReport(values.out, report, { command: process.env.DEEPGUARD_BENCH_COMMAND ?? `deepguard bench-k ${args.join(" ")}`, guard: values.guard ?? "random (top 4 layers, attention, seed 1)" });
  if (values.json) process.stdout.write(JSON.stringify({ rows: report.rows }) + "\n");
  else process.stdout.write(latencyTable(report.rows, report.cpuOverheadPct));
  model.dispose();
  return report;
}

/** latency-vs-k.json (rows, every run, the machine's load) and latency-vs-k.svg into dir. */
export async function writeLatencyReport(dir: string, report: LatencyReport, meta: Record<string, unknown>): Promise<void> {
  const { loadavg, cpus } = await import("node:os");
  const { mkdir } = await import("node:fs/promises");
  await mkdir(dir, { recursive: true });
  await writeJsonAtomic(join(dir, "latency-vs-k.json"), {
    date: new Date().toISOString(),
    ...meta,
    cpus: cpus().length,
    loadAverage: loadavg(),
    tokens: report.tokens,
    promptTokens: report.promptTokens,
    prompts: report.prompts,
    repeats: report.repeats,
    rows: report.rows,
    cpuOverheadPct: report.cpuOverheadPct,
    runsMs: report.runs,
    cpuMs: report.cpuRuns,
  });
  await writeFileAtomic(join(dir, "latency-vs-k.svg"), latencySvg(report.rows));
}
