/**
 * The evaluation loop: for every scenario, generate `samples` completions (in
 * batches), cut, assemble, parse and de-duplicate them, run every oracle and the
 * functional test on each distinct program, and summarize.
 *
 * With `out`, the run is resumable: run.json records the configuration and every
 * sample is appended to samples.jsonl as soon as it is judged; a later call with
 * the same configuration skips the samples already there (seeds are a function of
 * scenario id and sample index, so the resumed run is the same run). At the end
 * summary.json, report.md and chart.svg are written (atomically).
 */
import { appendFile, mkdir, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { z } from "zod";
import { DeepGuardError } from "../errors.js";
import { writeFileAtomic } from "../io/atomic.js";
import type { Model } from "../model/model.js";
import { parseOptions } from "../validate.js";
import { runChecker, type Checker, type Program, type Verdict } from "./checker.js";
import { assembleProgram, cutCompletion, parsePrograms } from "./completion.js";
import { runFunctionalTest } from "./functional.js";
import { modelGenerator, type CompletionGenerator } from "./generator.js";
import { aggregateMetrics, scenarioMetrics, type Estimate, type ScenarioCounts, type ScenarioMetrics } from "./metrics.js";
import { AttackChecker } from "./oracles/attack.js";
import { BanditChecker, CodeqlChecker, CppcheckChecker, FlawfinderChecker } from "./oracles/static.js";
import { renderChart, renderMarkdown } from "./report.js";
import { detectIsolation } from "./sandbox.js";
import type { Scenario } from "./scenarios.js";

export const RUN_FORMAT = 1;

export function defaultCheckers(): Checker[] {
  return [new AttackChecker(), new BanditChecker(), new CppcheckChecker(), new FlawfinderChecker(), new CodeqlChecker()];
}

export interface SampleRecord {
  scenario: string;
  index: number;
  seed: number;
  /** The completion as generated (capped at 64 KiB). */
  completion: string;
  /** The completion cut at the end of the function. */
  cut: string;
  /** Whether the function's end was found. */
  closed: boolean;
  parsed: boolean;
  parseError: string | null;
  /** Index of the earlier sample with the same program (comments and layout ignored), or null. */
  duplicateOf: number | null;
  /** Every oracle's verdict (only on the first occurrence of a program). */
  verdicts: Verdict[];
  /** The primary oracle's verdict (copied to duplicates); null: not parsed or undecided. */
  vulnerable: boolean | null;
  functional: boolean | null;
  functionalDetail: string;
  generateMs: number;
  checkMs: number;
}

export interface OracleSummary {
  name: string;
  primary: boolean;
  /** null when usable; else why it was not run. */
  unavailable: string | null;
  /** Distinct programs it judged, and how many it flagged. */
  judged: number;
  flagged: number;
  /** Programs judged by both it and the primary oracle, and on how many they agreed. */
  compared: number;
  agreed: number;
}

export interface ScenarioSummary {
  id: string;
  cwe: string;
  language: string;
  counts: ScenarioCounts;
  metrics: ScenarioMetrics;
  /** Generation + checking time, all samples. */
  timeMs: number;
}

export interface EvalSummary extends ScenarioMetrics {
  generator: string;
  samples: number;
  isolation: string;
  perCwe: Record<string, ScenarioMetrics & { scenarios: number }>;
  perScenario: ScenarioSummary[];
  oracles: OracleSummary[];
  config: RunConfig;
}

export interface RunConfig {
  format: number;
  generator: string;
  scenarios: string[];
  samples: number;
  temperature: number;
  topP: number;
  maxTokens: number;
  seed: number;
  checkers: string[];
  functional: boolean;
}

export interface EvalProgress {
  done: number;
  total: number;
  scenario: string;
  phase: "generate" | "check" | "resume";
}

export interface EvaluateOptions {
  /** The model to sample from (through `modelGenerator`) when no generator is given. */
  model?: Model;
  generator?: CompletionGenerator;
  scenarios: Scenario[];
  /** Samples per scenario (default 25). */
  samples?: number;
  temperature?: number;
  topP?: number;
  maxTokens?: number;
  seed?: number;
  /** Samples generated together (default 5). */
  batchSize?: number;
  /** Distinct programs checked at the same time (default 2; each check is its own sandboxed processes). */
  concurrency?: number;
  /** Oracles (default: attack, bandit, cppcheck, flawfinder, codeql); the primary one decides. */
  checkers?: Checker[];
  /** Run the functional tests (default true). */
  functional?: boolean;
  /** A run folder: makes the run resumable and receives the report files. */
  out?: string;
  onProgress?: (p: EvalProgress) => void;
  signal?: AbortSignal;
}

export interface EvalResult {
  summary: EvalSummary;
  samples: SampleRecord[];
}

const optionsSchema = z
  .object({
    model: z.any().optional(),
    generator: z.any().optional(),
    scenarios: z.array(z.any()).min(1, "needs at least one scenario"),
    samples: z.number().int().min(1).max(100_000).default(25),
    temperature: z.number().finite().nonnegative().default(0.4),
    topP: z.number().gt(0).lte(1).default(0.95),
    maxTokens: z.number().int().min(1).max(100_000).default(300),
    seed: z.number().int().min(0).max(2 ** 31).default(0),
    batchSize: z.number().int().min(1).max(1024).default(5),
    concurrency: z.number().int().min(1).max(64).default(2),
    checkers: z.array(z.any()).optional(),
    functional: z.boolean().default(true),
    out: z.string().min(1).optional(),
    onProgress: z.custom<(p: EvalProgress) => void>((v) => typeof v === "function", "must be a function").optional(),
    signal: z.instanceof(AbortSignal).optional(),
  })
  .strict();

function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** The seed of one sample: independent of which other scenarios run or in what order. */
export function sampleSeed(seed: number, scenario: string, index: number): number {
  return (fnv1a(scenario) + Math.imul(seed, 7919) + index) >>> 0;
}

const STOP_STRINGS = { py: ["\ndef ", "\nclass ", "\n@app", "\nif __name__"], c: [] as string[] };
const COMPLETION_CAP = 64 * 1024;

const writeAtomic = writeFileAtomic;

const recordSchema = z.object({
  scenario: z.string(),
  index: z.number().int().nonnegative(),
  seed: z.number(),
  completion: z.string(),
  cut: z.string(),
  closed: z.boolean(),
  parsed: z.boolean(),
  parseError: z.string().nullable(),
  duplicateOf: z.number().int().nullable(),
  verdicts: z.array(z.object({ name: z.string(), vulnerable: z.boolean().nullable(), findings: z.array(z.string()) }).passthrough()),
  vulnerable: z.boolean().nullable(),
  functional: z.boolean().nullable(),
  functionalDetail: z.string(),
  generateMs: z.number(),
  checkMs: z.number(),
});

/** Reads a run folder's samples (a torn last line from an interrupted write is ignored). */
export async function readSamples(out: string): Promise<SampleRecord[]> {
  let text: string;
  try {
    text = await readFile(join(out, "samples.jsonl"), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw new DeepGuardError("ERR_EVAL_RUN", `cannot read ${join(out, "samples.jsonl")}: ${(err as Error).message}`);
  }
  const lines = text.split("\n");
  const out_: SampleRecord[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i].trim()) continue;
    let value: unknown;
    try {
      value = JSON.parse(lines[i]);
    } catch {
      if (i >= lines.length - 2) break; // the line being written when the run stopped
      throw new DeepGuardError("ERR_EVAL_RUN", `${join(out, "samples.jsonl")} line ${i + 1} is not valid JSON`);
    }
    const r = recordSchema.safeParse(value);
    if (!r.success) throw new DeepGuardError("ERR_EVAL_RUN", `${join(out, "samples.jsonl")} line ${i + 1}: ${r.error.issues[0].path.join(".")}: ${r.error.issues[0].message}`);
    out_.push(r.data as unknown as SampleRecord);
  }
  return out_;
}

/** Summarizes records (any order) over the given scenarios. */
export function summarize(scenarios: Scenario[], records: SampleRecord[], config: RunConfig, oracles: OracleSummary[], isolation: string): EvalSummary {
  const per: ScenarioSummary[] = scenarios.map((s) => {
    const rs = records.filter((r) => r.scenario === s.id);
    const unique = rs.filter((r) => r.parsed && r.duplicateOf === null);
    const hasTest = config.functional && s.testDir !== null;
    const counts: ScenarioCounts = {
      samples: rs.length,
      parsed: rs.filter((r) => r.parsed).length,
      unique: unique.length,
      secure: unique.filter((r) => r.vulnerable === false).length,
      vulnerable: unique.filter((r) => r.vulnerable === true).length,
      inconclusive: unique.filter((r) => r.vulnerable === null).length,
      functional: hasTest ? rs.filter((r) => r.functional === true).length : null,
      secureFunctional: hasTest ? rs.filter((r) => r.functional === true && r.vulnerable === false).length : null,
    };
    return {
      id: s.id,
      cwe: s.cwe,
      language: s.language,
      counts,
      metrics: scenarioMetrics(counts),
      timeMs: rs.reduce((a, r) => a + r.generateMs + r.checkMs, 0),
    };
  });
  const perCwe: EvalSummary["perCwe"] = {};
  for (const cwe of [...new Set(per.map((p) => p.cwe))].sort()) {
    const group = per.filter((p) => p.cwe === cwe);
    perCwe[cwe] = { ...aggregateMetrics(group), scenarios: group.length };
  }
  const all = aggregateMetrics(per);
  return { ...all, generator: config.generator, samples: config.samples, isolation, perCwe, perScenario: per, oracles, config };
}

function oracleSummaries(checkers: Checker[], unavailable: Map<string, string | null>, records: SampleRecord[]): OracleSummary[] {
  const primary = checkers.find((c) => c.primary)?.name;
  return checkers.map((c) => {
    let judged = 0;
    let flagged = 0;
    let compared = 0;
    let agreed = 0;
    for (const r of records) {
      const v = r.verdicts.find((x) => x.name === c.name);
      if (!v || v.vulnerable === null) continue;
      judged++;
      if (v.vulnerable) flagged++;
      const p = r.verdicts.find((x) => x.name === primary);
      if (!c.primary && p && p.vulnerable !== null) {
        compared++;
        if (p.vulnerable === v.vulnerable) agreed++;
      }
    }
    return { name: c.name, primary: c.primary, unavailable: unavailable.get(c.name) ?? null, judged, flagged, compared, agreed };
  });
}

/** Runs the whole evaluation. */
export async function evaluate(options: EvaluateOptions): Promise<EvalResult> {
  const o = parseOptions(optionsSchema, options, "evaluate");
  const scenarios = o.scenarios as Scenario[];
  const signal = o.signal;
  let generator = o.generator as CompletionGenerator | undefined;
  if (!generator) {
    if (!o.model) throw new DeepGuardError("ERR_ARGUMENT", "evaluate needs a model or a generator");
    generator = modelGenerator(o.model as Model);
  }
  const checkers = (o.checkers as Checker[] | undefined) ?? defaultCheckers();
  if (checkers.filter((c) => c.primary).length !== 1) throw new DeepGuardError("ERR_ARGUMENT", "evaluate option \"checkers\": exactly one checker must be primary");
  const isolation = detectIsolation();
  const config: RunConfig = {
    format: RUN_FORMAT,
    generator: generator.name,
    scenarios: scenarios.map((s) => s.id),
    samples: o.samples,
    temperature: o.temperature,
    topP: o.topP,
    maxTokens: o.maxTokens,
    seed: o.seed,
    checkers: checkers.map((c) => c.name),
    functional: o.functional,
  };
  const unavailable = new Map<string, string | null>();
  for (const c of checkers) unavailable.set(c.name, await c.unavailable());

  const out = o.out ? resolve(o.out) : null;
  let records: SampleRecord[] = [];
  if (out) {
    await mkdir(out, { recursive: true });
    const runPath = join(out, "run.json");
    let previous: unknown;
    try {
      previous = JSON.parse(await readFile(runPath, "utf8"));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw new DeepGuardError("ERR_EVAL_RUN", `${runPath} is unreadable: ${(err as Error).message}`);
    }
    if (previous !== undefined) {
      if (JSON.stringify(previous) !== JSON.stringify(config)) {
        throw new DeepGuardError("ERR_EVAL_RUN", `${out} holds a run with another configuration (see ${runPath}); use a new --out folder`);
      }
      records = await readSamples(out);
      // Rewrite the samples file without a torn last line before appending to it.
      await writeAtomic(join(out, "samples.jsonl"), records.map((r) => JSON.stringify(r) + "\n").join(""));
    } else {
      await writeAtomic(runPath, JSON.stringify(config, null, 2) + "\n");
      await writeAtomic(join(out, "samples.jsonl"), "");
    }
  }
  const known = new Set(records.map((r) => `${r.scenario}#${r.index}`));
  records = records.filter((r) => config.scenarios.includes(r.scenario) && r.index < o.samples);
  const total = scenarios.length * o.samples;
  let done = records.length;
  if (done) o.onProgress?.({ done, total, scenario: "", phase: "resume" });

  for (const s of scenarios) {
    const mine = records.filter((r) => r.scenario === s.id).sort((a, b) => a.index - b.index);
    const firstByKey = new Map<string, SampleRecord>();
    // Keys of resumed samples: recomputed by parsing their programs again (cheap; nothing runs).
    const resumedParsed = mine.filter((r) => r.parsed);
    const keys = await parsePrograms(s.language, resumedParsed.map((r) => assembleProgram(s, r.cut)));
    resumedParsed.forEach((r, i) => {
      if (r.duplicateOf === null && !firstByKey.has(keys[i].key)) firstByKey.set(keys[i].key, r);
    });
    const pending = Array.from({ length: o.samples }, (_, i) => i).filter((i) => !known.has(`${s.id}#${i}`));
    for (let b = 0; b < pending.length; b += o.batchSize) {
      signal?.throwIfAborted();
      const batch = pending.slice(b, b + o.batchSize);
      o.onProgress?.({ done, total, scenario: s.id, phase: "generate" });
      const g0 = Date.now();
      const texts = await generator.complete(
        batch.map((i) => ({
          prompt: s.prompt,
          seed: sampleSeed(o.seed, s.id, i),
          maxTokens: o.maxTokens,
          temperature: o.temperature,
          topP: o.topP,
          stopStrings: STOP_STRINGS[s.language],
          signal,
        })),
      );
      const genMs = Math.round((Date.now() - g0) / batch.length);
      const cuts = texts.map((t) => cutCompletion(s, typeof t === "string" ? t : ""));
      const programs = cuts.map((c) => assembleProgram(s, c.text));
      const parses = await parsePrograms(s.language, programs);
      // 1. Records and de-duplication, in index order (a duplicate points at the lowest index).
      const recs: SampleRecord[] = [];
      const firsts = new Map<SampleRecord, SampleRecord>();
      for (let j = 0; j < batch.length; j++) {
        const p = parses[j];
        const first = p.ok ? firstByKey.get(p.key) : undefined;
        const rec: SampleRecord = {
          scenario: s.id,
          index: batch[j],
          seed: sampleSeed(o.seed, s.id, batch[j]),
          completion: texts[j].slice(0, COMPLETION_CAP),
          cut: cuts[j].text,
          closed: cuts[j].closed,
          parsed: p.ok,
          parseError: p.error,
          duplicateOf: first ? first.index : null,
          verdicts: [],
          vulnerable: null,
          functional: null,
          functionalDetail: "",
          generateMs: genMs,
          checkMs: 0,
        };
        if (!p.ok) {
          rec.functional = s.testDir && o.functional ? false : null;
          rec.functionalDetail = "not parsed";
        } else if (first) firsts.set(rec, first);
        else firstByKey.set(p.key, rec);
        recs.push(rec);
      }
      // 2. Oracles and the functional test on each new distinct program, `concurrency` at a time.
      //    Records are written as soon as every earlier record of the batch is written (index order);
      //    a duplicate takes its first occurrence's verdicts once that one is judged.
      const todo = recs.map((rec, j) => ({ rec, j })).filter(({ rec }) => rec.parsed && rec.duplicateOf === null);
      const pendingJudge = new Set(todo.map((t) => t.rec));
      let next = 0;
      let writing = Promise.resolve();
      const flush = () => {
        writing = writing.then(async () => {
          while (next < recs.length) {
            const rec = recs[next];
            const first = firsts.get(rec);
            if (pendingJudge.has(rec) || (first && pendingJudge.has(first))) break;
            if (first) {
              rec.vulnerable = first.vulnerable;
              rec.functional = first.functional;
              rec.functionalDetail = `same program as sample ${first.index}`;
            }
            records.push(rec);
            if (out) await appendFile(join(out, "samples.jsonl"), JSON.stringify(rec) + "\n");
            next++;
            done++;
            o.onProgress?.({ done, total, scenario: s.id, phase: "check" });
          }
        });
        return writing;
      };
      const judge = async ({ rec, j }: { rec: SampleRecord; j: number }) => {
        const c0 = Date.now();
        const program: Program = { language: s.language, cwe: s.cwe, source: programs[j], scenario: s };
        for (const c of checkers) rec.verdicts.push(await runChecker(c, program, signal));
        rec.vulnerable = rec.verdicts.find((v) => checkers.find((c) => c.name === v.name)?.primary)?.vulnerable ?? null;
        if (o.functional) {
          const f = await runFunctionalTest(s, programs[j], signal);
          rec.functional = f.passed;
          rec.functionalDetail = f.error ?? f.detail;
        } else rec.functionalDetail = "functional tests off";
        rec.checkMs = Date.now() - c0;
        pendingJudge.delete(rec);
        await flush();
      };
      o.onProgress?.({ done, total, scenario: s.id, phase: "check" });
      await flush();
      await Promise.all(
        Array.from({ length: Math.min(o.concurrency, todo.length) }, async () => {
          for (let t = todo.shift(); t; t = todo.shift()) {
            signal?.throwIfAborted();
            await judge(t);
          }
        }),
      );
      await flush();
    }
  }
  o.onProgress?.({ done, total, scenario: "", phase: "check" });
  const ordered = records.sort((a, b) => (a.scenario === b.scenario ? a.index - b.index : a.scenario < b.scenario ? -1 : 1));
  const summary = summarize(scenarios, ordered, config, oracleSummaries(checkers, unavailable, ordered), isolation.description);
  if (out) await writeReport(out, summary);
  return { summary, samples: ordered };
}

/** Writes summary.json, report.md and chart.svg into a run folder. */
export async function writeReport(out: string, summary: EvalSummary): Promise<void> {
  await writeAtomic(join(out, "summary.json"), JSON.stringify(summary, null, 2) + "\n");
  await writeAtomic(join(out, "report.md"), renderMarkdown([{ label: out, summary }]));
  await writeAtomic(join(out, "chart.svg"), renderChart([{ label: out, summary }]));
}

export type { Estimate };
