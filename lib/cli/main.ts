#!/usr/bin/env node
/**
 * deepguard CLI: one file per command under lib/cli/ (inspect and forward live
 * here). Every command that loads a model takes the model folder as its first,
 * optional positional: without it, the default model shipped in models/default/.
 * A prompt may start with "-": anything that is not one of the command's flags is a positional.
 */
import { parseArgs } from "node:util";
import { DeepGuardError } from "../errors.js";
import { Model } from "../model/model.js";
import { writeForwardJson } from "./forward-json.js";
import { modelLoadOptions, QUANTIZE_FLAGS, QUANTIZE_USAGE } from "./load-options.js";
import { CORPUS_USAGE, corpusCommand } from "./corpus.js";
import { TOKENIZER_USAGE, tokenizerCommand } from "./tokenizer.js";
import { PROBE_USAGE, probeCommand } from "./probe.js";
import { CHECK_USAGE, checkCommand } from "./check.js";
import { EVAL_USAGE, evalCommand } from "./eval.js";
import { TRAIN_USAGE, trainCommand } from "./train.js";
import { PRETRAIN_USAGE, pretrainCommand } from "./pretrain.js";
import { GUARD_TRAIN_USAGE, guardCommand } from "./guard-train.js";
import { SCAN_USAGE, scanCommand } from "./scan.js";
import { BENCH_K_USAGE, benchKCommand } from "./guided.js";
import { GENERATE_USAGE, generateCommand } from "./generate.js";
import { parseIds, positionalsLast, splitModelDir } from "./args.js";

const USAGE = `usage:
  deepguard inspect [<model-dir>] [--json]
  deepguard forward [<model-dir>] (--ids 1,2,3 | --text "...") [--adapter <dir>] [--json] [--logits all|last|none]
  ${GENERATE_USAGE}
  ${TOKENIZER_USAGE}
  ${CORPUS_USAGE}
  ${PROBE_USAGE}
${EVAL_USAGE}
${CHECK_USAGE}
  ${GUARD_TRAIN_USAGE}
  ${SCAN_USAGE}
  ${TRAIN_USAGE}
  ${PRETRAIN_USAGE}
  ${BENCH_K_USAGE}
${QUANTIZE_USAGE}
a command given no <model-dir> uses the default model shipped in the package (models/default/)`;

class UsageError extends DeepGuardError {
  constructor(message: string) {
    super("ERR_USAGE", `${message}\n${USAGE}`);
  }
}

/** Indices of the k largest values, largest first (ties: lower index first), in one pass. */
export function topIndices(row: Float32Array, k: number): number[] {
  const best: number[] = [];
  for (let i = 0; i < row.length; i++) {
    const v = row[i];
    if (best.length === k && !(v > row[best[k - 1]])) continue;
    let at = best.length;
    while (at > 0 && v > row[best[at - 1]]) at--;
    best.splice(at, 0, i);
    if (best.length > k) best.pop();
  }
  return best;
}

async function inspect(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, options: { json: { type: "boolean" }, ...QUANTIZE_FLAGS }, allowPositionals: true });
  const usage = (m: string) => new UsageError(m);
  const { modelDir } = splitModelDir(positionals, 0, usage, "inspect takes at most one model directory");
  const { info } = await Model.load(modelDir, modelLoadOptions(values));
  if (values.json) {
    process.stdout.write(JSON.stringify(info, null, 2) + "\n");
    return;
  }
  const rows: [string, string | number | boolean][] = [
    ["directory", info.directory],
    ["architecture", info.architecture],
    ["layers", info.numLayers],
    ["hidden size", info.hiddenSize],
    ["attention heads", `${info.numHeads} (kv ${info.numKvHeads}, head dim ${info.headDim})`],
    ["intermediate size", info.intermediateSize],
    ["vocab size", info.vocabSize],
    ["dtype", info.dtype],
    ["linear layers", `${info.linearDtype}${info.quantization ? ` (quantized at load: ${info.quantization})` : ""}`],
    ["activations", info.activations],
    ["kv cache", `${info.kvCacheDtype} (${info.kvCacheBytesPerToken.toLocaleString("en-US")} bytes per position)`],
    ["parameters", info.parameterCount.toLocaleString("en-US")],
    ["weight bytes", info.weightBytes.toLocaleString("en-US")],
    ["tied embeddings", info.tieWordEmbeddings],
    ["tokenizer", info.tokenizer ? "present" : "absent"],
  ];
  for (const [k, v] of rows) process.stdout.write(`${k.padEnd(18)} ${v}\n`);
}

function logitsOption(raw: string | undefined, fallback: "all" | "last" | "none"): "all" | "last" | "none" {
  if (raw === undefined) return fallback;
  if (raw !== "all" && raw !== "last" && raw !== "none") throw new UsageError(`--logits must be all, last or none, got "${raw}"`);
  return raw;
}

async function forward(args: string[]): Promise<void> {
  const flags = { ids: { type: "string" }, text: { type: "string" }, adapter: { type: "string" }, json: { type: "boolean" }, logits: { type: "string" }, ...QUANTIZE_FLAGS } as const;
  const { values, positionals } = parseArgs({ args: positionalsLast(args, flags), options: flags, allowPositionals: true });
  const usage = (m: string) => new UsageError(m);
  const { modelDir } = splitModelDir(positionals, 0, usage, "forward takes at most one model directory");
  if ((values.ids === undefined) === (values.text === undefined)) throw usage("forward needs exactly one of --ids or --text");
  const logits = logitsOption(values.logits, "all");
  const model = await Model.load(modelDir, modelLoadOptions(values));
  if (values.adapter !== undefined) await model.loadAdapter(values.adapter);
  const input = values.ids !== undefined ? parseIds(usage, values.ids) : (values.text as string);
  if (values.json) {
    const out = await model.forward(input, { hiddenStates: "all", logits });
    await writeForwardJson(process.stdout, out, model.config.numLayers);
    return;
  }
  // For a person: each position's token and (for the rows asked for) the
  // model's top 5 next tokens, found in one pass over the vocabulary.
  const out = await model.forward(input, { logits });
  const show = (id: number) => (model.tokenizer ? `${id} ${JSON.stringify(model.detokenize([id]))}` : String(id));
  const first = out.tokens.length - out.logits.rows;
  for (let t = 0; t < out.tokens.length; t++) {
    const line = `${String(t).padStart(4)}  ${show(out.tokens[t])}`;
    if (t < first) {
      process.stdout.write(line + "\n");
      continue;
    }
    const row = out.logits.row(t - first);
    const top = topIndices(row, 5);
    process.stdout.write(`${line.padEnd(30)} -> ${top.map((id) => `${show(id)} (${row[id].toFixed(2)})`).join(", ")}\n`);
  }
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === "inspect") await inspect(rest);
    else if (command === "forward") await forward(rest);
    else if (command === "generate") await generateCommand(rest, (m) => new UsageError(m));
    else if (command === "bench-k") await benchKCommand(rest);
    else if (command === "tokenizer") await tokenizerCommand(rest);
    else if (command === "corpus") await corpusCommand(rest);
    else if (command === "probe") await probeCommand(rest);
    else if (command === "eval") await evalCommand(rest, (m) => new UsageError(m));
    else if (command === "check") await checkCommand(rest, (m) => new UsageError(m));
    else if (command === "train") await trainCommand(rest);
    else if (command === "pretrain") await pretrainCommand(rest);
    else if (command === "guard") await guardCommand(rest);
    else if (command === "scan") await scanCommand(rest);
    else if (command === undefined || command === "--help" || command === "-h") {
      process.stdout.write(USAGE + "\n");
      return command === undefined ? 2 : 0;
    } else throw new UsageError(`unknown command "${command}"`);
    return 0;
  } catch (err) {
    if ((err as Error).name === "AbortError" || (err as { code?: string }).code === "ERR_ABORTED") return 130;
    const code = (err as { code?: string }).code;
    process.stderr.write(`deepguard: ${code ? `[${code}] ` : ""}${(err as Error).message}\n`);
    // node:util parseArgs throws its own ERR_PARSE_ARGS_* codes for malformed flags.
    return code === "ERR_USAGE" || /^ERR_PARSE_ARGS_/.test(code ?? "") ? 2 : 1;
  }
}

// A reader that stops early (`deepguard forward ... | head`) closes the pipe:
// that is the end of the output, not a crash.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
  throw err;
});

process.exitCode = await main(process.argv.slice(2));
