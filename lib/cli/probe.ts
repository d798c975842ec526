/**
 * deepguard probe [<model-dir>] --data <sven-path> --out <dir> [--folds 5] [--seed S]
 *                 [--pooling mean|changed] [--max-tokens N] [--json]
 *
 * Layer-wise linear probing (lib/guard/probe.ts). Progress goes to stderr; the
 * report JSON and the AUC chart are written atomically into --out; stdout gets the
 * table, or with --json the report itself.
 */
import { parseArgs } from "node:util";
import { Dataset } from "../data/dataset.js";
import { DeepGuardError } from "../errors.js";
import { probeLayers, type ProbeProgress } from "../guard/probe.js";
import { probeTable, writeProbeReport } from "../guard/probe-report.js";
import { Model } from "../model/model.js";
import { splitModelDir } from "./args.js";
import { modelLoadOptions, QUANTIZE_FLAGS } from "./load-options.js";

export const PROBE_USAGE =
  "deepguard probe [<model-dir>] --data <sven-path> --out <dir> [--folds 5] [--seed S] [--pooling mean|changed] [--max-tokens N] [--json]";

/** Functions longer than this are left out unless --max-tokens says otherwise (SVEN has a few of 10k+ tokens). */
const DEFAULT_MAX_TOKENS = 1024;

function usage(message: string): DeepGuardError {
  return new DeepGuardError("ERR_USAGE", `${message}\nusage: ${PROBE_USAGE}`);
}

function integerOption(name: string, raw: string | undefined, min: number): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (raw.trim() === "" || !Number.isSafeInteger(n) || n < min) throw usage(`--${name} must be an integer >= ${min}, got "${raw}"`);
  return n;
}

export async function probeCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      ...QUANTIZE_FLAGS,
      data: { type: "string" },
      out: { type: "string" },
      folds: { type: "string" },
      seed: { type: "string" },
      pooling: { type: "string" },
      "max-tokens": { type: "string" },
      json: { type: "boolean" },
    },
    allowPositionals: true,
  });
  const loadOptions = modelLoadOptions(values); // flags are checked before any file is read
  const { modelDir } = splitModelDir(positionals, 0, usage, "probe takes at most one model directory");
  if (values.data === undefined) throw usage("probe needs --data <sven-path>");
  if (values.out === undefined) throw usage("probe needs --out <dir>");
  const pooling = values.pooling ?? "mean";
  if (pooling !== "mean" && pooling !== "changed") throw usage(`--pooling must be "mean" or "changed", got "${pooling}"`);
  const folds = integerOption("folds", values.folds, 2) ?? 5;
  const seed = integerOption("seed", values.seed, 0) ?? 0;
  const maxTokensOption = integerOption("max-tokens", values["max-tokens"], 1);

  const model = await Model.load(modelDir, loadOptions);
  const maxTokens = maxTokensOption ?? Math.min(DEFAULT_MAX_TOKENS, model.config.maxPositionEmbeddings);
  const dataset = await Dataset.fromSven(values.data, { maxTokens });
  const abort = new AbortController();
  process.once("SIGINT", () => abort.abort());
  let lastLine = 0;
  const onProgress = (p: ProbeProgress) => {
    // At most a line a second, and always the last of each phase.
    const now = Date.now();
    if (p.done !== p.total && now - lastLine < 1000) return;
    lastLine = now;
    process.stderr.write(`probe: ${p.phase === "forward" ? "forward passes" : "layers fitted"} ${p.done}/${p.total}\n`);
  };
  const dropped = await dataset.dropped(model);
  if (dropped.tooLong > 0) process.stderr.write(`probe: ${dropped.tooLong} pairs longer than ${maxTokens} tokens left out (--max-tokens)\n`);
  const report = await probeLayers(model, dataset, { folds, seed, pooling, onProgress, signal: abort.signal });
  const written = await writeProbeReport(values.out, report);
  process.stderr.write(`probe: wrote ${written.json} and ${written.svg}\n`);
  if (values.json) process.stdout.write(JSON.stringify(report, null, 2) + "\n");
  else process.stdout.write(probeTable(report));
  model.dispose();
}
