#!/usr/bin/env node
/**
 * deepguard CLI
 *   deepguard inspect <model-dir> [--json]
 *   deepguard forward <model-dir> (--ids 1,2,3 | --text "...") [--json] [--logits all|last|none]
 *   (every command that loads a model takes --quantize q8_0|q4_0|q4_k [--quant-cache])
 *     (without --json: each token and its top 5 next-token predictions)
 *   deepguard generate <model-dir> ("<prompt>" | --ids 1,2,3) [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--seed S]
 *   deepguard train <model-dir> --data <sven-train> --out <dir> [...]   (lib/cli/train.ts)
 *   (forward and generate take --adapter <dir>: a PEFT LoRA adapter)
 *   deepguard tokenizer train --corpus <file-or-dir> --out <dir> [--vocab 8192]
 *   deepguard corpus build|pack ...
 *   deepguard pretrain <config.json> --data <packed> --out <dir> [...]   (lib/cli/pretrain.ts)
 *   deepguard probe <model-dir> --data <sven-path> --out <dir> [--folds 5] [--seed S] [--pooling mean|changed] [--max-tokens N] [--json]
 *   deepguard eval ... / deepguard eval report ... / deepguard check ... (lib/cli/eval.ts, lib/cli/check.ts)
 *   deepguard guard train <model-dir> --data <path> --val <path> --out <dir> [--layers a-b] [--aggregation ...] [--epochs N] [--seed S]
 *   deepguard scan <model-dir> --guard <dir> <file> [--html <out.html>] [--json]
 *   deepguard generate <model-dir> "<prompt>" --guard <dir> [--adapter <dir>] [--interval 64] [--strength 1] [--n 4]
 *   deepguard bench-k <model-dir> [--guard <dir>] [--k 1,2,...,inf] [--tokens 256] [--json] [--out <dir>]
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
import { BENCH_K_USAGE, GUIDED_USAGE, benchKCommand, guidedGenerateCommand, isGuidedGenerate } from "./guided.js";

const USAGE = `usage:
  deepguard inspect <model-dir> [--json]
  deepguard forward <model-dir> (--ids 1,2,3 | --text "...") [--adapter <dir>] [--json] [--logits all|last|none]
  deepguard generate <model-dir> ("<prompt>" | --ids 1,2,3) [--adapter <dir>] [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--seed S]
  ${TOKENIZER_USAGE}
  ${CORPUS_USAGE}
  ${PROBE_USAGE}
${EVAL_USAGE}
${CHECK_USAGE}
  ${GUARD_TRAIN_USAGE}
  ${SCAN_USAGE}
  ${TRAIN_USAGE}
  ${PRETRAIN_USAGE}
  ${GUIDED_USAGE}
  ${BENCH_K_USAGE}
${QUANTIZE_USAGE}`;

class UsageError extends DeepGuardError {
  constructor(message: string) {
    super("ERR_USAGE", `${message}\n${USAGE}`);
  }
}

/**
 * A number flag: plain decimal only (no hex, no "1e3" for integers, no empty
 * string), inside [min, max]; the error names the flag.
 */
function numberOption(name: string, raw: string | undefined, integer: boolean, min: number, max = Infinity, minExclusive = false): number | undefined {
  if (raw === undefined) return undefined;
  const pattern = integer ? /^-?\d+$/ : /^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;
  const n = Number(raw);
  if (!pattern.test(raw.trim()) || !Number.isFinite(n) || (integer && !Number.isSafeInteger(n))) {
    throw new UsageError(`--${name} must be ${integer ? "an integer" : "a number"}, got "${raw}"`);
  }
  if (n < min || n > max || (minExclusive && n === min)) {
    const range = `${minExclusive ? "(" : "["}${min}, ${max === Infinity ? "∞)" : `${max}]`}`;
    throw new UsageError(`--${name} must be in ${range}, got ${raw}`);
  }
  return n;
}

/**
 * Puts "--" before the first argument that is not one of `flags` (or a flag's
 * value), so positionals such as a prompt "-x" or "--help me" are not taken
 * for options. "--name=value" forms are recognised too.
 */
function positionalsLast(args: string[], flags: Record<string, { type: "string" | "boolean" }>): string[] {
  const options: string[] = [];
  const positionals: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    const name = a.startsWith("--") ? a.slice(2).split("=")[0] : null;
    const flag = name !== null ? flags[name] : undefined;
    if (!flag) {
      positionals.push(a);
      continue;
    }
    // "--name=value", so a value may start with "-" (e.g. --temperature -1 is then named as out of range).
    if (flag.type === "string" && !a.includes("=") && i + 1 < args.length) options.push(`${a}=${args[++i]}`);
    else options.push(a);
  }
  return [...options, "--", ...positionals];
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

function parseIds(raw: string): number[] {
  return raw.split(",").map((s, i) => {
    const t = s.trim();
    if (!/^\d+$/.test(t)) throw new UsageError(`--ids entry ${i} ("${s}") is not a non-negative integer`);
    return Number(t);
  });
}

async function inspect(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, options: { json: { type: "boolean" }, ...QUANTIZE_FLAGS }, allowPositionals: true });
  if (positionals.length !== 1) throw new UsageError("inspect takes one model directory");
  const { info } = await Model.load(positionals[0], modelLoadOptions(values));
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
  if (positionals.length !== 1) throw new UsageError("forward takes one model directory");
  if ((values.ids === undefined) === (values.text === undefined)) throw new UsageError("forward needs exactly one of --ids or --text");
  const logits = logitsOption(values.logits, "all");
  const model = await Model.load(positionals[0], modelLoadOptions(values));
  if (values.adapter !== undefined) await model.loadAdapter(values.adapter);
  const input = values.ids !== undefined ? parseIds(values.ids) : (values.text as string);
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

async function generate(args: string[]): Promise<void> {
  const flags = {
    ids: { type: "string" },
    "max-tokens": { type: "string" },
    temperature: { type: "string" },
    "top-p": { type: "string" },
    "top-k": { type: "string" },
    seed: { type: "string" },
    adapter: { type: "string" },
    ...QUANTIZE_FLAGS,
  } as const;
  const { values, positionals } = parseArgs({ args: positionalsLast(args, flags), options: flags, allowPositionals: true });
  const wanted = values.ids === undefined ? 2 : 1;
  if (positionals.length !== wanted) {
    throw new UsageError(values.ids === undefined ? "generate takes a model directory and a prompt (or --ids)" : "generate takes a model directory; --ids replaces the prompt");
  }
  const options = {
    maxTokens: numberOption("max-tokens", values["max-tokens"], true, 1, 1_000_000),
    temperature: numberOption("temperature", values.temperature, false, 0),
    topP: numberOption("top-p", values["top-p"], false, 0, 1, true),
    topK: numberOption("top-k", values["top-k"], true, 0, 2 ** 31 - 1),
    seed: numberOption("seed", values.seed, true, 0, Number.MAX_SAFE_INTEGER),
  };
  const prompt = values.ids !== undefined ? parseIds(values.ids) : positionals[1];
  const model = await Model.load(positionals[0], modelLoadOptions(values));
  if (values.adapter !== undefined) await model.loadAdapter(values.adapter);
  const abort = new AbortController();
  process.once("SIGINT", () => abort.abort());
  const stream = model.generate(prompt, { ...options, signal: abort.signal });
  // Without a tokenizer, the new token ids are printed instead of text.
  const asIds = model.tokenizer === null;
  let first = true;
  for await (const chunk of stream) {
    if (!asIds) process.stdout.write(chunk.text);
    else
      for (const id of chunk.tokens) {
        process.stdout.write(`${first ? "" : " "}${id}`);
        first = false;
      }
  }
  process.stdout.write("\n");
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === "inspect") await inspect(rest);
    else if (command === "forward") await forward(rest);
    else if (command === "generate" && isGuidedGenerate(rest)) await guidedGenerateCommand(rest);
    else if (command === "generate") await generate(rest);
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
