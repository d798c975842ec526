/**
 * deepguard train [<model-dir>] --data <sven-train> --out <dir> [--val <sven-val>] [--layers auto|a-b|i,j,..]
 *   [--aggregation attention|mean|last|weighted] [--rank 16] [--alpha A] [--dropout P] [--targets q_proj,v_proj]
 *   [--lr 2e-4] [--warmup N] [--epochs N] [--max-steps N] [--batch-size N] [--grad-accum N] [--seed S]
 *   [--generation W] [--security W] [--kl W] [--margin M] [--changed-only] [--recompute]
 *   [--eval-every N] [--patience N] [--max-tokens N] [--resume] [--json]
 *
 * LoRA training (lib/train/trainer.ts). On a terminal, a live progress line
 * (step, losses, tokens/s, ETA) on stderr; with --json one JSON object per line on
 * stdout (each step: step, loss, generation, security, kl, lr, gradNorm,
 * tokensPerSec, ...). --out receives last/, best/ and, at its top level, the final
 * PEFT adapter with the guard files beside it. --resume continues from --out/last.
 * Ctrl-C stops at the next step and leaves a resumable checkpoint.
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { Dataset } from "../data/dataset.js";
import { DeepGuardError } from "../errors.js";
import { AGGREGATIONS, type Aggregation } from "../guard/guard.js";
import { LORA_TARGETS, type LoraTarget } from "../model/adapter.js";
import { Model } from "../model/model.js";
import { splitModelDir } from "./args.js";
import { Trainer, type EvalEvent, type StepEvent, type TrainerOptions } from "../train/trainer.js";

export const TRAIN_USAGE =
  "deepguard train [<model-dir>] --data <sven-train> --out <dir> [--val <sven-val>] [--layers auto|a-b|i,j] [--aggregation attention|mean|last|weighted] " +
  "[--rank 16] [--alpha A] [--dropout P] [--targets q_proj,v_proj] [--lr 2e-4] [--warmup N] [--epochs N] [--max-steps N] [--batch-size N] " +
  "[--grad-accum N] [--seed S] [--generation W] [--security W] [--kl W] [--margin M] [--changed-only] [--recompute] [--eval-every N] " +
  "[--patience N] [--max-tokens N] [--resume] [--json]";

function usage(message: string): DeepGuardError {
  return new DeepGuardError("ERR_USAGE", `${message}\nusage: ${TRAIN_USAGE}`);
}

function num(name: string, raw: string | undefined, integer: boolean): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(n) || (integer && !Number.isSafeInteger(n))) {
    throw usage(`--${name} must be ${integer ? "an integer" : "a number"}, got "${raw}"`);
  }
  return n;
}

/** "auto", "a-b" (inclusive) or "i,j,k" (negatives count from the end). */
export function parseLayers(raw: string): "auto" | number[] {
  if (raw === "auto") return "auto";
  const range = /^(-?\d+)-(-?\d+)$/.exec(raw);
  if (range) {
    const a = Number(range[1]), b = Number(range[2]);
    if (b < a) throw usage(`--layers ${raw}: the range is empty`);
    return Array.from({ length: b - a + 1 }, (_, i) => a + i);
  }
  return raw.split(",").map((s, i) => {
    if (!/^-?\d+$/.test(s.trim())) throw usage(`--layers entry ${i} ("${s}") is not an integer (use auto, a-b or i,j,k)`);
    return Number(s);
  });
}

function fmt(x: number, digits = 4): string {
  return Number.isFinite(x) ? x.toFixed(digits) : String(x);
}

function duration(s: number): string {
  if (!Number.isFinite(s)) return "?";
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  return h > 0 ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(sec).padStart(2, "0")}s`;
}

export async function trainCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      data: { type: "string" }, val: { type: "string" }, out: { type: "string" },
      layers: { type: "string" }, aggregation: { type: "string" },
      rank: { type: "string" }, alpha: { type: "string" }, dropout: { type: "string" }, targets: { type: "string" },
      lr: { type: "string" }, warmup: { type: "string" }, epochs: { type: "string" }, "max-steps": { type: "string" },
      "batch-size": { type: "string" }, "grad-accum": { type: "string" }, seed: { type: "string" },
      generation: { type: "string" }, security: { type: "string" }, kl: { type: "string" }, margin: { type: "string" },
      "changed-only": { type: "boolean" }, recompute: { type: "boolean" },
      "eval-every": { type: "string" }, patience: { type: "string" }, "max-tokens": { type: "string" },
      resume: { type: "boolean" }, json: { type: "boolean" },
    },
    allowPositionals: true,
  });
  const { modelDir } = splitModelDir(positionals, 0, usage, "train takes at most one model directory");
  if (values.data === undefined) throw usage("train needs --data <sven-train>");
  if (values.out === undefined) throw usage("train needs --out <dir>");
  const aggregation = values.aggregation ?? "attention";
  if (!(AGGREGATIONS as readonly string[]).includes(aggregation)) throw usage(`--aggregation must be one of ${AGGREGATIONS.join(", ")}`);
  const targets = values.targets?.split(",").map((t) => t.trim());
  for (const t of targets ?? []) if (!(LORA_TARGETS as readonly string[]).includes(t)) throw usage(`--targets: "${t}" is not one of ${LORA_TARGETS.join(", ")}`);

  const model = await Model.load(modelDir);
  const maxTokens = num("max-tokens", values["max-tokens"], true) ?? Math.min(1024, model.config.maxPositionEmbeddings);
  const train = await Dataset.fromSven(values.data, { maxTokens });
  const val = values.val !== undefined ? await Dataset.fromSven(values.val, { maxTokens }) : undefined;
  const rank = num("rank", values.rank, true);
  const options: TrainerOptions = {
    layers: values.layers !== undefined ? parseLayers(values.layers) : "auto",
    aggregation: aggregation as Aggregation,
    lora: {
      ...(rank !== undefined ? { rank } : {}),
      ...(values.alpha !== undefined ? { alpha: num("alpha", values.alpha, false) } : {}),
      ...(values.dropout !== undefined ? { dropout: num("dropout", values.dropout, false) } : {}),
      ...(targets ? { targetModules: targets as LoraTarget[] } : {}),
    },
    loss: {
      ...(values.generation !== undefined ? { generation: num("generation", values.generation, false) } : {}),
      ...(values.security !== undefined ? { security: num("security", values.security, false) } : {}),
      ...(values.kl !== undefined ? { kl: num("kl", values.kl, false) } : {}),
      ...(values.margin !== undefined ? { margin: num("margin", values.margin, false) } : {}),
      changedTokensOnly: values["changed-only"] ?? false,
    },
    ...(values.lr !== undefined ? { lr: num("lr", values.lr, false) } : {}),
    ...(values.warmup !== undefined ? { warmupSteps: num("warmup", values.warmup, true) } : {}),
    // --max-steps alone: as many epochs as those steps need.
    ...(values.epochs !== undefined ? { epochs: num("epochs", values.epochs, true) } : values["max-steps"] !== undefined ? { epochs: 1_000_000 } : {}),
    ...(values["max-steps"] !== undefined ? { maxSteps: num("max-steps", values["max-steps"], true) } : {}),
    ...(values["batch-size"] !== undefined ? { batchSize: num("batch-size", values["batch-size"], true) } : {}),
    ...(values["grad-accum"] !== undefined ? { gradAccum: num("grad-accum", values["grad-accum"], true) } : {}),
    ...(values.seed !== undefined ? { seed: num("seed", values.seed, true) } : {}),
    recompute: values.recompute ?? false,
  };
  // --resume takes the run's saved options; --max-steps / --epochs may extend it.
  const trainer = values.resume
    ? await Trainer.resume(join(values.out, "last"), model, {
        ...(options.maxSteps !== undefined ? { maxSteps: options.maxSteps } : {}),
        ...(values.epochs !== undefined || values["max-steps"] !== undefined ? { epochs: options.epochs } : {}),
      })
    : new Trainer(model, options);
  const json = values.json ?? false;
  const tty = !json && process.stderr.isTTY;
  const abort = new AbortController();
  process.once("SIGINT", () => {
    abort.abort();
    process.stderr.write("\ntrain: stopping after this step (Ctrl-C); a resumable checkpoint goes to last/\n");
  });
  trainer.on("probe", (r: { recommendedLayers: number[] }) => {
    if (json) process.stdout.write(JSON.stringify({ type: "probe", recommendedLayers: r.recommendedLayers }) + "\n");
    else process.stderr.write(`train: probed layers, guard aggregates ${r.recommendedLayers.join(", ")}\n`);
  });
  trainer.on("step", (s: StepEvent) => {
    if (json) {
      process.stdout.write(JSON.stringify({ type: "step", ...s }) + "\n");
      return;
    }
    const width = 24, done = Math.round((width * s.step) / Math.max(1, s.totalSteps));
    const line = `[${"#".repeat(done)}${".".repeat(width - done)}] ${s.step}/${s.totalSteps} loss ${fmt(s.loss)} gen ${fmt(s.generation)} ` +
      `sec ${fmt(s.security)} kl ${fmt(s.kl)} lr ${s.lr.toExponential(2)} ${fmt(s.tokensPerSec, 0)} tok/s ETA ${duration(s.eta)}`;
    process.stderr.write(tty ? `\r${line}\x1b[K` : line + "\n");
  });
  trainer.on("eval", (e: EvalEvent) => {
    if (json) process.stdout.write(JSON.stringify({ type: "eval", ...e }) + "\n");
    else process.stderr.write(`${tty ? "\n" : ""}eval at step ${e.step}: loss ${fmt(e.loss)} (gen ${fmt(e.generation)} sec ${fmt(e.security)} kl ${fmt(e.kl)})${e.best ? " best" : ""}\n`);
  });
  const result = await trainer.fit(train, {
    outDir: values.out,
    ...(val ? { val } : {}),
    ...(values["eval-every"] !== undefined ? { evalEvery: num("eval-every", values["eval-every"], true) } : {}),
    ...(values.patience !== undefined ? { patience: num("patience", values.patience, true) } : {}),
    signal: abort.signal,
  });
  if (json) process.stdout.write(JSON.stringify({ type: "done", ...result, history: undefined }) + "\n");
  else process.stderr.write(`${tty ? "\n" : ""}train: ${result.stopped} after ${result.steps} steps; adapter in ${result.outDir}\n`);
  model.dispose();
}
