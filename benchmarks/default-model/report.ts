/**
 * The default model's numbers for its model card (scripts/build-default-model.sh
 * runs this): held-out loss and perplexity of pretraining, the probe's band, the
 * guard's validation report on SVEN (with and without the adapter under it), and
 * the sec_eval parse rates of plain and guarded completions by language.
 *
 *   node dist/benchmarks/default-model/report.js --model DIR --guard DIR --val SVEN_VAL
 *     --pretrain-log pretrain.jsonl --probe probe-report.json [--eval-plain RUN] [--eval-guarded RUN] --out report.json
 */
import { readFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Dataset, Guard, Model } from "../../lib/index.js";
import type { EvalSummary } from "../../lib/eval/evaluate.js";
import type { ProbeReport } from "../../lib/guard/probe.js";
import { writeResult } from "../support/output.js";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    guard: { type: "string" },
    val: { type: "string" },
    "pretrain-log": { type: "string" },
    probe: { type: "string" },
    "eval-plain": { type: "string" },
    "eval-guarded": { type: "string" },
    out: { type: "string" },
  },
});
for (const need of ["model", "guard", "val", "pretrain-log", "probe", "out"] as const) {
  if (!values[need]) throw new Error(`report needs --${need}`);
}

/** The last held-out evaluation of the pretraining log (JSON lines of `deepguard pretrain --json`). */
async function pretraining(log: string) {
  const lines = (await readFile(log, "utf8")).split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  const evals = lines.filter((l) => l.type === "eval") as { step: number; heldoutLoss: number; perplexity: number }[];
  const steps = lines.filter((l) => l.type === "step") as { step: number; tokensPerSec: number }[];
  const last = evals.at(-1);
  if (!last) throw new Error(`${log} has no held-out evaluation`);
  return { step: last.step, heldoutLoss: last.heldoutLoss, perplexity: last.perplexity, curve: evals.map((e) => [e.step, e.heldoutLoss]), lastTokensPerSec: steps.at(-1)?.tokensPerSec ?? null };
}

/** Parse rate per language (py, c) and overall, from a run folder's summary.json. */
async function parseRates(run: string | undefined) {
  if (!run) return null;
  const s = JSON.parse(await readFile(join(run, "summary.json"), "utf8")) as EvalSummary;
  const by: Record<string, { parsed: number; samples: number; rate: number }> = {};
  for (const sc of s.perScenario) {
    const b = (by[sc.language] ??= { parsed: 0, samples: 0, rate: 0 });
    b.parsed += sc.counts.parsed;
    b.samples += sc.counts.samples;
  }
  for (const b of Object.values(by)) b.rate = b.samples ? b.parsed / b.samples : 0;
  return { generator: s.generator, samples: s.samples, byLanguage: by, overall: s.parseRate, secureRate: s.secureRate };
}

const model = await Model.load(values.model!);
const val = await Dataset.fromSven(values.val!, { maxTokens: model.config.maxPositionEmbeddings });
const guard = await Guard.load(values.guard!, model);
await model.loadAdapter(values.guard!);
const withAdapter = await guard.evaluate(val, { adapter: true });
const baseOnly = await guard.evaluate(val, { adapter: false });
const probe = JSON.parse(await readFile(values.probe!, "utf8")) as ProbeReport;
const report = {
  date: new Date().toISOString(),
  loadAverage: loadavg(),
  model: { directory: values.model, parameters: model.info.parameterCount, config: model.config },
  pretraining: await pretraining(values["pretrain-log"]!),
  probe: { recommendedLayers: probe.recommendedLayers, byLayer: probe.layers.map((l) => ({ layer: l.layer, auc: l.auc, aucStd: l.aucStd, accuracy: l.accuracy })) },
  guard: {
    layers: guard.layers,
    aggregation: guard.aggregation,
    validation: { pairs: withAdapter.pairs, withAdapter, baseModel: baseOnly, meanMargin: withAdapter.meanSecure - withAdapter.meanVulnerable },
  },
  secEval: { plain: await parseRates(values["eval-plain"]), guarded: await parseRates(values["eval-guarded"]) },
};
model.dispose();
await writeResult(values.out!, report);
process.stdout.write(JSON.stringify({ pretraining: report.pretraining, guard: report.guard.validation, secEval: report.secEval }, null, 2) + "\n");
