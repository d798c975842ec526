#!/usr/bin/env node
/**
 * deepguard CLI
 *   deepguard inspect <model-dir> [--json]
 *   deepguard forward <model-dir> (--ids 1,2,3 | --text "...") [--json]
 *   (every command that loads a model takes --quantize q8_0|q4_0|q4_k [--quant-cache])
 *     (without --json: each token and its top 5 next-token predictions)
 *   deepguard generate <model-dir> "<prompt>" [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--seed S]
 */
import { parseArgs } from "node:util";
import { DeepGuardError } from "../errors.js";
import { Model, QUANT_FORMATS, type LoadOptions, type QuantFormat } from "../model/model.js";
import { writeForwardJson } from "./forward-json.js";

const USAGE = `usage:
  deepguard inspect <model-dir> [--json]
  deepguard forward <model-dir> (--ids 1,2,3 | --text "...") [--json]
  deepguard generate <model-dir> "<prompt>" [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--seed S]
every command that loads a model also takes --quantize q8_0|q4_0|q4_k (quantize the weights at load)
  and --quant-cache (keep them in <model-dir>/deepguard-<format>.dgq for the next load)`;

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

/** --quantize, shared by every command that loads a model. */
const quantizeOption = { quantize: { type: "string" }, "quant-cache": { type: "boolean" } } as const;
function loadOptions(values: { quantize?: string; "quant-cache"?: boolean }): LoadOptions {
  const q = values.quantize;
  if (q === undefined) {
    if (values["quant-cache"]) throw new UsageError("--quant-cache needs --quantize");
    return {};
  }
  if (!(QUANT_FORMATS as readonly string[]).includes(q)) {
    throw new UsageError(`--quantize must be one of ${QUANT_FORMATS.join(", ")}, got "${q}"`);
  }
  return { quantize: q as QuantFormat, ...(values["quant-cache"] ? { quantCache: true } : {}) };
}

function parseIds(raw: string): number[] {
  return raw.split(",").map((s, i) => {
    const t = s.trim();
    if (!/^\d+$/.test(t)) throw new UsageError(`--ids entry ${i} ("${s}") is not a non-negative integer`);
    return Number(t);
  });
}

async function inspect(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, options: { json: { type: "boolean" }, ...quantizeOption }, allowPositionals: true });
  if (positionals.length !== 1) throw new UsageError("inspect takes one model directory");
  const { info } = await Model.load(positionals[0], loadOptions(values));
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
    options: { ids: { type: "string" }, text: { type: "string" }, json: { type: "boolean" }, ...quantizeOption },
    allowPositionals: true,
  });
  if (positionals.length !== 1) throw new UsageError("forward takes one model directory");
  if ((values.ids === undefined) === (values.text === undefined)) throw new UsageError("forward needs exactly one of --ids or --text");
  const model = await Model.load(positionals[0], loadOptions(values));
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
      ...quantizeOption,
    },
    allowPositionals: true,
  });
  if (positionals.length !== 2) throw new UsageError("generate takes a model directory and a prompt");
  const model = await Model.load(positionals[0], loadOptions(values));
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
    else if (command === undefined || command === "--help" || command === "-h") {
      process.stdout.write(USAGE + "\n");
      return command === undefined ? 2 : 0;
    } else throw new UsageError(`unknown command "${command}"`);
    return 0;
  } catch (err) {
    if ((err as Error).name === "AbortError") return 130;
    const code = (err as { code?: string }).code;
    process.stderr.write(`deepguard: ${code ? `[${code}] ` : ""}${(err as Error).message}\n`);
    return err instanceof UsageError || (err as { code?: string }).code === "ERR_PARSE_ARGS_UNKNOWN_OPTION" ? 2 : 1;
  }
}

// A reader that stops early (`deepguard forward ... | head`) closes the pipe:
// that is the end of the output, not a crash.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
  throw err;
});

process.exitCode = await main(process.argv.slice(2));
