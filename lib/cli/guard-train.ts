/**
 * deepguard guard train [<model-dir>] --data <path> --val <path> --out <dir>
 *   [--layers a-b | a,b,...] [--aggregation attention|mean|last|weighted] [--epochs N] [--seed S]
 *   [--lr X] [--batch-size N] [--max-tokens N]
 *
 * Trains a guard on SVEN pairs with the base frozen (Guard.fit) and saves it into
 * --out (guard.json + guard.safetensors). Progress goes to stderr, one line per
 * epoch with the validation margin loss and pair accuracy; stdout gets the
 * result as JSON.
 */
import { parseArgs } from "node:util";
import { Dataset } from "../data/dataset.js";
import { DeepGuardError } from "../errors.js";
import { AGGREGATIONS, Guard, type Aggregation } from "../guard/guard.js";
import { Model } from "../model/model.js";
import { splitModelDir } from "./args.js";
import { modelLoadOptions, QUANTIZE_FLAGS } from "./load-options.js";

export const GUARD_TRAIN_USAGE =
  "deepguard guard train [<model-dir>] --data <path> --val <path> --out <dir> [--layers a-b] [--aggregation attention|mean|last|weighted] [--epochs N] [--seed S] [--lr X] [--batch-size N] [--max-tokens N]";

const DEFAULT_MAX_TOKENS = 1024;

function usage(message: string): DeepGuardError {
  return new DeepGuardError("ERR_USAGE", `${message}\nusage: ${GUARD_TRAIN_USAGE}`);
}

function numberOption(name: string, raw: string | undefined, integer: boolean, min: number): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(n) || (integer && !Number.isSafeInteger(n)) || n < min) {
    throw usage(`--${name} must be ${integer ? "an integer" : "a number"} >= ${min}, got "${raw}"`);
  }
  return n;
}

/** "17-20" (inclusive range), or a comma list that may hold negatives ("-4,-3,-2,-1"). */
export function parseLayers(raw: string): number[] {
  const range = /^\s*(\d+)\s*-\s*(\d+)\s*$/.exec(raw);
  if (range) {
    const a = Number(range[1]), b = Number(range[2]);
    if (b < a) throw usage(`--layers range "${raw}" is empty (end before start)`);
    return Array.from({ length: b - a + 1 }, (_, i) => a + i);
  }
  return raw.split(",").map((s, i) => {
    if (!/^\s*-?\d+\s*$/.test(s)) throw usage(`--layers entry ${i} ("${s}") is not an integer; use a-b or a comma list`);
    return Number(s);
  });
}

export async function guardCommand(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  if (sub !== "train") throw usage(sub === undefined ? "guard needs a subcommand" : `unknown guard subcommand "${sub}"`);
  const { values, positionals } = parseArgs({
    args: rest,
    options: {
      ...QUANTIZE_FLAGS,
      data: { type: "string" },
      val: { type: "string" },
      out: { type: "string" },
      layers: { type: "string" },
      aggregation: { type: "string" },
      epochs: { type: "string" },
      seed: { type: "string" },
      lr: { type: "string" },
      "batch-size": { type: "string" },
      "max-tokens": { type: "string" },
    },
    allowPositionals: true,
  });
  const loadOptions = modelLoadOptions(values); // flags are checked before any file is read
  const { modelDir } = splitModelDir(positionals, 0, usage, "guard train takes at most one model directory");
  for (const need of ["data", "val", "out"] as const) if (values[need] === undefined) throw usage(`guard train needs --${need}`);
  const aggregation = (values.aggregation ?? "attention") as Aggregation;
  if (!AGGREGATIONS.includes(aggregation)) throw usage(`--aggregation must be one of ${AGGREGATIONS.join(", ")}, got "${values.aggregation}"`);
  const layers = values.layers !== undefined ? parseLayers(values.layers) : undefined;
  const epochs = numberOption("epochs", values.epochs, true, 1) ?? 5;
  const seed = numberOption("seed", values.seed, true, 0) ?? 0;
  const lr = numberOption("lr", values.lr, false, Number.MIN_VALUE);
  const batchSize = numberOption("batch-size", values["batch-size"], true, 1);
  const maxTokensOption = numberOption("max-tokens", values["max-tokens"], true, 1);

  const model = await Model.load(modelDir, loadOptions);
  try {
    const maxTokens = maxTokensOption ?? Math.min(DEFAULT_MAX_TOKENS, model.config.maxPositionEmbeddings);
    const train = await Dataset.fromSven(values.data!, { maxTokens });
    const val = await Dataset.fromSven(values.val!, { maxTokens });
    // Default: the top four hidden states (DESIGN.md, the paper's m = 4).
    const L = model.config.numLayers;
    const chosen = layers ?? Array.from({ length: Math.min(4, L + 1) }, (_, i) => L - Math.min(4, L + 1) + 1 + i);
    const guard = Guard.create(model, { layers: chosen, aggregation, seed });
    const abort = new AbortController();
    process.once("SIGINT", () => abort.abort());
    process.stderr.write(`guard train: layers ${guard.layers.join(",")}, ${aggregation}, ${train.size} training records, ${val.size} validation records\n`);
    const result = await guard.fit(train, {
      val,
      epochs,
      seed,
      lr,
      batchSize,
      signal: abort.signal,
      onEpoch: (e) =>
        process.stderr.write(
          `epoch ${e.epoch + 1}/${epochs}: train loss ${e.trainLoss.toFixed(4)}, val margin loss ${e.val!.marginLoss.toFixed(4)}, ` +
            `pair accuracy ${(100 * e.val!.pairAccuracy).toFixed(1)}%\n`,
        ),
    });
    await guard.save(values.out!);
    process.stderr.write(`guard train: saved ${values.out}\n`);
    process.stdout.write(JSON.stringify({ out: values.out, layers: guard.layers, aggregation, ...result }, null, 2) + "\n");
  } finally {
    model.dispose();
  }
}
