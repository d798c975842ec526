/**
 * deepguard eval [<model-dir>] --scenarios DIR [--tests DIR] [--samples N] [--temperature T] [--top-p P]
 *   [--max-tokens N] [--seed S] [--batch N] [--concurrency N] [--out DIR] [--cwe LIST] [--scenario ID]... [--no-functional]
 *   [--adapter DIR] [--guard DIR] [--interval N] [--json]
 * deepguard eval report <run> [<run>...] [--out FILE.md] [--svg FILE.svg]
 */
import { readFile, writeFile } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { DeepGuardError } from "../errors.js";
import { evaluate, type EvalProgress, type EvalSummary } from "../eval/evaluate.js";
import { modelGenerator } from "../eval/generator.js";
import { Generator, guidedCompletionGenerator } from "../generate/guided.js";
import { Guard } from "../guard/guard.js";
import { renderChart, renderMarkdown } from "../eval/report.js";
import { loadScenarios } from "../eval/scenarios.js";
import { Model } from "../model/model.js";
import { splitModelDir } from "./args.js";
import { modelLoadOptions, QUANTIZE_FLAGS } from "./load-options.js";

export const EVAL_USAGE = `  deepguard eval [<model-dir>] --scenarios DIR [--tests DIR] [--samples N] [--temperature T] [--top-p P]
      [--max-tokens N] [--seed S] [--batch N] [--concurrency N] [--out DIR] [--cwe cwe-089,...] [--scenario cwe-089/0-py]
      [--no-functional] [--adapter DIR] [--guard DIR] [--interval N] [--json]
  deepguard eval report <run-dir> [<run-dir>...] [--out FILE.md] [--svg FILE.svg]`;

type Usage = (message: string) => Error;

function num(usage: Usage, name: string, raw: string | undefined, integer: boolean): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(n) || (integer && !Number.isInteger(n))) throw usage(`--${name} must be ${integer ? "an integer" : "a number"}, got "${raw}"`);
  return n;
}

function progressBar(p: EvalProgress): void {
  if (!process.stderr.isTTY) return;
  const width = 30;
  const frac = p.total ? p.done / p.total : 1;
  const bar = "#".repeat(Math.round(frac * width)).padEnd(width, ".");
  process.stderr.write(`\r[${bar}] ${p.done}/${p.total} ${p.phase.padEnd(8)} ${p.scenario.padEnd(14)}`);
}

export async function evalCommand(args: string[], usage: Usage): Promise<void> {
  if (args[0] === "report") return reportCommand(args.slice(1), usage);
  const { values, positionals } = parseArgs({
    args,
    options: {
      ...QUANTIZE_FLAGS,
      scenarios: { type: "string" },
      tests: { type: "string" },
      samples: { type: "string" },
      temperature: { type: "string" },
      "top-p": { type: "string" },
      "max-tokens": { type: "string" },
      seed: { type: "string" },
      batch: { type: "string" },
      concurrency: { type: "string" },
      out: { type: "string" },
      cwe: { type: "string" },
      scenario: { type: "string", multiple: true },
      "no-functional": { type: "boolean" },
      adapter: { type: "string" },
      guard: { type: "string" },
      interval: { type: "string" },
      json: { type: "boolean" },
    },
    allowPositionals: true,
  });
  const loadOptions = modelLoadOptions(values); // flags are checked before any file is read
  const { modelDir } = splitModelDir(positionals, 0, usage, "eval takes at most one model directory");
  if (!values.scenarios) throw usage("eval needs --scenarios DIR (the sec_eval layout)");
  if (values.interval !== undefined && values.guard === undefined) throw usage("--interval needs --guard (the guided generator)");
  const interval =
    values.interval === undefined ? undefined : /^inf(inity)?$/i.test(values.interval) ? Infinity : num(usage, "interval", values.interval, true);
  const scenarios = await loadScenarios(values.scenarios, {
    tests: values.tests ?? null,
    cwes: values.cwe ? values.cwe.split(",").map((s) => s.trim()).filter(Boolean) : undefined,
    ids: values.scenario,
  });
  const model = await Model.load(modelDir, loadOptions);
  if (values.adapter) await model.loadAdapter(values.adapter);
  const abort = new AbortController();
  process.once("SIGINT", () => abort.abort());
  const res = await evaluate({
    generator: values.guard
      ? guidedCompletionGenerator(new Generator(model, await Guard.load(values.guard, model), { interval }))
      : modelGenerator(model),
    scenarios,
    samples: num(usage, "samples", values.samples, true),
    temperature: num(usage, "temperature", values.temperature, false),
    topP: num(usage, "top-p", values["top-p"], false),
    maxTokens: num(usage, "max-tokens", values["max-tokens"], true),
    seed: num(usage, "seed", values.seed, true),
    batchSize: num(usage, "batch", values.batch, true),
    concurrency: num(usage, "concurrency", values.concurrency, true),
    functional: !values["no-functional"],
    out: values.out,
    onProgress: progressBar,
    signal: abort.signal,
  });
  if (process.stderr.isTTY) process.stderr.write("\n");
  if (values.json) {
    process.stdout.write(JSON.stringify(res.summary, null, 2) + "\n");
    return;
  }
  process.stdout.write(renderMarkdown([{ label: values.out ?? basename(modelDir ?? "default"), summary: res.summary }]));
  if (values.out) process.stdout.write(`\nwrote ${join(values.out, "summary.json")}, report.md, chart.svg, samples.jsonl\n`);
}

async function readSummary(dir: string): Promise<EvalSummary> {
  const path = join(dir, "summary.json");
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new DeepGuardError("ERR_EVAL_RUN", `${path} cannot be read (is ${dir} a finished eval run?): ${(err as Error).message}`);
  }
  try {
    const s = JSON.parse(text) as EvalSummary;
    if (!s || typeof s !== "object" || !Array.isArray(s.perScenario) || typeof s.perCwe !== "object") throw new Error("not an eval summary");
    return s;
  } catch (err) {
    throw new DeepGuardError("ERR_EVAL_RUN", `${path} is not an eval summary: ${(err as Error).message}`);
  }
}

async function reportCommand(args: string[], usage: Usage): Promise<void> {
  const { values, positionals } = parseArgs({ args, options: { out: { type: "string" }, svg: { type: "string" } }, allowPositionals: true });
  if (positionals.length < 1) throw usage("eval report takes one or more run folders");
  const runs = [];
  for (const p of positionals) runs.push({ label: basename(resolve(p)), summary: await readSummary(p) });
  const md = renderMarkdown(runs);
  if (values.out) await writeFile(values.out, md);
  if (values.svg) await writeFile(values.svg, renderChart(runs));
  process.stdout.write(md);
}
