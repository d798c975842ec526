#!/usr/bin/env node
/**
 * deepguard CLI
 *   deepguard inspect <model-dir> [--json]
 *   deepguard forward <model-dir> (--ids 1,2,3 | --text "...") [--json]
 *     (without --json: each token and its top 5 next-token predictions)
 *   deepguard generate <model-dir> "<prompt>" [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--seed S]
 *   deepguard train <model-dir> --data <sven-train> --out <dir> [...]   (lib/cli/train.ts)
 *   (forward and generate take --adapter <dir>: a PEFT LoRA adapter)
 *   deepguard tokenizer train --corpus <file-or-dir> --out <dir> [--vocab 8192]
 *   deepguard corpus build|pack ...
 *   deepguard pretrain <config.json> --data <packed> --out <dir> [...]   (lib/cli/pretrain.ts)
 *   deepguard probe <model-dir> --data <sven-path> --out <dir> [--folds 5] [--seed S] [--pooling mean|changed] [--max-tokens N] [--json]
 *   deepguard eval ... / deepguard eval report ... / deepguard check ... (lib/cli/eval.ts, lib/cli/check.ts)
 *   deepguard guard train <model-dir> --data <path> --val <path> --out <dir> [--layers a-b] [--aggregation ...] [--epochs N] [--seed S]
 *   deepguard scan <model-dir> --guard <dir> <file> [--html <out.html>] [--json]
 */
import { parseArgs } from "node:util";
import { DeepGuardError } from "../errors.js";
import { Model } from "../model/model.js";
import { writeForwardJson } from "./forward-json.js";
import { CORPUS_USAGE, corpusCommand } from "./corpus.js";
import { TOKENIZER_USAGE, tokenizerCommand } from "./tokenizer.js";
import { PROBE_USAGE, probeCommand } from "./probe.js";
import { CHECK_USAGE, checkCommand } from "./check.js";
import { EVAL_USAGE, evalCommand } from "./eval.js";
import { TRAIN_USAGE, trainCommand } from "./train.js";
import { PRETRAIN_USAGE, pretrainCommand } from "./pretrain.js";
import { GUARD_TRAIN_USAGE, guardCommand } from "./guard-train.js";
import { SCAN_USAGE, scanCommand } from "./scan.js";

const USAGE = `usage:
  deepguard inspect <model-dir> [--json]
  deepguard forward <model-dir> (--ids 1,2,3 | --text "...") [--adapter <dir>] [--json]
  deepguard generate <model-dir> "<prompt>" [--adapter <dir>] [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--seed S]
  ${TOKENIZER_USAGE}
  ${CORPUS_USAGE}
  ${PROBE_USAGE}
${EVAL_USAGE}
${CHECK_USAGE}
  ${GUARD_TRAIN_USAGE}
  ${SCAN_USAGE}
  ${TRAIN_USAGE}
  ${PRETRAIN_USAGE}`;

class UsageError extends DeepGuardError {
  constructor(message: string) {
    super("ERR_USAGE", `${message}\n${USAGE}`);
  }
}

function numberOption(name: string, raw: string | undefined, integer: boolean): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(n) || (integer && !Number.isInteger(n))) {
    throw new UsageError(`--${name} must be ${integer ? "an integer" : "a number"}, got "${raw}"`);
  }
  return n;
}

function parseIds(raw: string): number[] {
  return raw.split(",").map((s, i) => {
    const t = s.trim();
    if (!/^\d+$/.test(t)) throw new UsageError(`--ids entry ${i} ("${s}") is not a non-negative integer`);
    return Number(t);
  });
}

async function inspect(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, options: { json: { type: "boolean" } }, allowPositionals: true });
  if (positionals.length !== 1) throw new UsageError("inspect takes one model directory");
  const { info } = await Model.load(positionals[0]);
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
    ["parameters", info.parameterCount.toLocaleString("en-US")],
    ["weight bytes", info.weightBytes.toLocaleString("en-US")],
    ["tied embeddings", info.tieWordEmbeddings],
    ["tokenizer", info.tokenizer ? "present" : "absent"],
  ];
  for (const [k, v] of rows) process.stdout.write(`${k.padEnd(18)} ${v}\n`);
}

async function forward(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    options: { ids: { type: "string" }, text: { type: "string" }, adapter: { type: "string" }, json: { type: "boolean" } },
    allowPositionals: true,
  });
  if (positionals.length !== 1) throw new UsageError("forward takes one model directory");
  if ((values.ids === undefined) === (values.text === undefined)) throw new UsageError("forward needs exactly one of --ids or --text");
  const model = await Model.load(positionals[0]);
  if (values.adapter !== undefined) await model.loadAdapter(values.adapter);
  const input = values.ids !== undefined ? parseIds(values.ids) : (values.text as string);
  if (values.json) {
    const out = await model.forward(input, { hiddenStates: "all" });
    await writeForwardJson(process.stdout, out, model.config.numLayers);
    return;
  }
  // For a person: each position's token and the model's top 5 next tokens.
  const out = await model.forward(input);
  const show = (id: number) => (model.tokenizer ? `${id} ${JSON.stringify(model.detokenize([id]))}` : String(id));
  for (let t = 0; t < out.tokens.length; t++) {
    const row = out.logits.row(t);
    const top = Array.from(row.keys()).sort((a, b) => row[b] - row[a]).slice(0, 5);
    process.stdout.write(`${String(t).padStart(4)}  ${show(out.tokens[t]).padEnd(24)} -> ${top.map((id) => `${show(id)} (${row[id].toFixed(2)})`).join(", ")}\n`);
  }
}

async function generate(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      "max-tokens": { type: "string" },
      temperature: { type: "string" },
      "top-p": { type: "string" },
      "top-k": { type: "string" },
      seed: { type: "string" },
      adapter: { type: "string" },
    },
    allowPositionals: true,
  });
  if (positionals.length !== 2) throw new UsageError("generate takes a model directory and a prompt");
  const model = await Model.load(positionals[0]);
  if (values.adapter !== undefined) await model.loadAdapter(values.adapter);
  const abort = new AbortController();
  process.once("SIGINT", () => abort.abort());
  const stream = model.generate(positionals[1], {
    maxTokens: numberOption("max-tokens", values["max-tokens"], true),
    temperature: numberOption("temperature", values.temperature, false),
    topP: numberOption("top-p", values["top-p"], false),
    topK: numberOption("top-k", values["top-k"], true),
    seed: numberOption("seed", values.seed, true),
    signal: abort.signal,
  });
  for await (const chunk of stream) process.stdout.write(chunk.text);
  process.stdout.write("\n");
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === "inspect") await inspect(rest);
    else if (command === "forward") await forward(rest);
    else if (command === "generate") await generate(rest);
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
    if ((err as Error).name === "AbortError") return 130;
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
