/**
 * deepguard generate <model-dir> "<prompt>" --guard <dir> [--adapter <dir>] [--interval 64] [--strength 1] [--n 4] ...
 *   Guided generation (lib/generate/guided.ts): sample 1 streams to stdout (or
 *   every sample, one after another, with --n > 1); the final score of each
 *   sample goes to stderr.
 * deepguard bench-k <model-dir> [--guard <dir>] [--k 1,2,4,8,16,32,64,128,inf] [--tokens 256] [--json] [--out <dir>]
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
import { modelLoadOptions, QUANTIZE_FLAGS } from "./load-options.js";

export const GUIDED_USAGE =
  'deepguard generate <model-dir> "<prompt>" --guard <dir> [--adapter <dir>] [--interval 64|inf] [--strength 1] [--n 4] [--candidates C] [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--seed S]';
export const BENCH_K_USAGE = "deepguard bench-k <model-dir> [--guard <dir>] [--k 1,2,4,8,16,32,64,128,inf] [--tokens 256] [--prompts 2] [--repeats 2] [--strategies plain,captured,reforward] [--json] [--out <dir>]";

function usage(message: string, which: string): DeepGuardError {
  return new DeepGuardError("ERR_USAGE", `${message}\nusage: ${which}`);
}

function num(name: string, raw: string | undefined, integer: boolean, which: string): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(n) || (integer && !Number.isInteger(n))) {
    throw usage(`--${name} must be ${integer ? "an integer" : "a number"}, got "${raw}"`, which);
  }
  return n;
}

/** True when a generate command line asks for guidance (then guidedGenerateCommand runs it). */
export function isGuidedGenerate(args: string[]): boolean {
  return args.some((a) => a === "--guard" || a.startsWith("--guard="));
}

export async function guidedGenerateCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      ...QUANTIZE_FLAGS,
      guard: { type: "string" },
      adapter: { type: "string" },
      interval: { type: "string" },
      strength: { type: "string" },
      n: { type: "string" },
      candidates: { type: "string" },
      "max-tokens": { type: "string" },
      temperature: { type: "string" },
      "top-p": { type: "string" },
      "top-k": { type: "string" },
      seed: { type: "string" },
    },
    allowPositionals: true,
  });
  const loadOptions = modelLoadOptions(values); // flags are checked before any file is read
  if (positionals.length !== 2) throw usage("generate takes a model directory and a prompt", GUIDED_USAGE);
  if (!values.guard) throw usage("--guard needs a guard directory", GUIDED_USAGE);
  const interval = values.interval === undefined ? undefined : /^inf(inity)?$/i.test(values.interval) ? Infinity : num("interval", values.interval, true, GUIDED_USAGE);
  const n = num("n", values.n, true, GUIDED_USAGE) ?? 1;
  const model = await Model.load(positionals[0], loadOptions);
  if (values.adapter) await model.loadAdapter(values.adapter);
  const guard = await Guard.load(values.guard, model);
  const gen = new Generator(model, guard, {
    interval,
    strength: num("strength", values.strength, false, GUIDED_USAGE),
    candidates: num("candidates", values.candidates, true, GUIDED_USAGE),
  });
  const abort = new AbortController();
  process.once("SIGINT", () => abort.abort());
  const sampling = {
    maxTokens: num("max-tokens", values["max-tokens"], true, GUIDED_USAGE),
    temperature: num("temperature", values.temperature, false, GUIDED_USAGE),
    topP: num("top-p", values["top-p"], false, GUIDED_USAGE),
    topK: num("top-k", values["top-k"], true, GUIDED_USAGE),
    seed: num("seed", values.seed, true, GUIDED_USAGE),
    signal: abort.signal,
  };
  if (n === 1) {
    const it = gen.stream(positionals[1], sampling);
    let r = await it.next();
    while (!r.done) {
      process.stdout.write(r.value.text);
      r = await it.next();
    }
    process.stdout.write("\n");
    printScores(r.value.samples);
    return;
  }
  const r = await gen.complete(positionals[1], { ...sampling, n });
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
  if (positionals.length !== 1) throw usage("bench-k takes one model directory", BENCH_K_USAGE);
  const ks = values.k === undefined ? DEFAULT_KS : parseKList(values.k);
  const strategies = values.strategies === undefined ? undefined : values.strategies.split(",").map((s) => s.trim());
  if (strategies && !strategies.every((s) => (STRATEGIES as readonly string[]).includes(s))) {
    throw usage(`--strategies takes a comma list of ${STRATEGIES.join(", ")}, got "${values.strategies}"`, BENCH_K_USAGE);
  }
  const model = await Model.load(positionals[0], loadOptions);
  const guard = values.guard ? await Guard.load(values.guard, model) : await randomBenchGuard(model);
  const report = await measureLatencyVsK(model, guard, {
    ks,
    strategies: strategies as Strategy[] | undefined,
    tokens: num("tokens", values.tokens, true, BENCH_K_USAGE),
    prompts: num("prompts", values.prompts, true, BENCH_K_USAGE),
    repeats: num("repeats", values.repeats, true, BENCH_K_USAGE),
    promptTokens: num("prompt-tokens", values["prompt-tokens"], true, BENCH_K_USAGE),
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
