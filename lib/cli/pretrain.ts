/**
 * deepguard pretrain <config.json> --data <packed-train> --out <dir> [--heldout <packed>] [--tokenizer <dir>]
 *   [--resume] [--max-steps N] [--json]
 *
 * Full-parameter pretraining (lib/train/pretrain.ts). config.json is a Hugging
 * Face Qwen2/Llama config plus a "training" section (README "Pretraining").
 * On a terminal a live progress bar on stderr (step, loss, lr, tokens/s, ETA);
 * otherwise one line every 10 steps; with --json one JSON object per line on
 * stdout (step, eval, done). --max-steps N stops after N more optimizer steps
 * (the cosine schedule still spans training.steps), leaving a checkpoint that
 * --resume continues. Ctrl-C stops after the current step and saves one too.
 */
import { parseArgs } from "node:util";
import { DeepGuardError } from "../errors.js";
import { pretrain, readPretrainConfig, type PretrainEvalEvent, type PretrainStepEvent } from "../train/pretrain.js";

export const PRETRAIN_USAGE =
  "deepguard pretrain <config.json> --data <packed-train> --out <dir> [--heldout <packed>] [--tokenizer <dir>] [--resume] [--max-steps N] [--json]";

function usage(message: string): DeepGuardError {
  return new DeepGuardError("ERR_USAGE", `${message}\nusage: ${PRETRAIN_USAGE}`);
}

function duration(s: number): string {
  if (!Number.isFinite(s)) return "?";
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  return h > 0 ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(sec).padStart(2, "0")}s`;
}

export async function pretrainCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      data: { type: "string" }, heldout: { type: "string" }, out: { type: "string" }, tokenizer: { type: "string" },
      resume: { type: "boolean" }, "max-steps": { type: "string" }, json: { type: "boolean" },
    },
    allowPositionals: true,
  });
  if (positionals.length !== 1) throw usage("pretrain takes one config.json");
  if (values.data === undefined) throw usage("pretrain needs --data <packed-train>");
  if (values.out === undefined) throw usage("pretrain needs --out <dir>");
  let maxSteps: number | undefined;
  if (values["max-steps"] !== undefined) {
    maxSteps = Number(values["max-steps"]);
    if (!Number.isSafeInteger(maxSteps) || maxSteps < 1) throw usage(`--max-steps must be an integer >= 1, got "${values["max-steps"]}"`);
  }
  const config = await readPretrainConfig(positionals[0]);
  const json = values.json ?? false;
  const tty = !json && process.stderr.isTTY;
  const abort = new AbortController();
  const onSigint = () => {
    abort.abort();
    process.stderr.write("\npretrain: stopping after this step (Ctrl-C); saving a resumable checkpoint\n");
  };
  process.once("SIGINT", onSigint);
  let firstStep: number | undefined, firstTime = 0;
  const onStep = (s: PretrainStepEvent) => {
    if (json) {
      process.stdout.write(JSON.stringify(s) + "\n");
      return;
    }
    if (firstStep === undefined) {
      firstStep = s.step - 1;
      firstTime = Date.now() - s.elapsedSec * 1000;
    }
    const perStep = (Date.now() - firstTime) / 1000 / Math.max(1, s.step - firstStep);
    const eta = perStep * (s.totalSteps - s.step);
    const width = 24, done = Math.round((width * s.step) / s.totalSteps);
    const line = `[${"#".repeat(done)}${".".repeat(width - done)}] ${s.step}/${s.totalSteps} loss ${s.loss.toFixed(4)} ` +
      `lr ${s.lr.toExponential(2)} |g| ${s.gradNorm.toFixed(2)} ${s.tokensPerSec.toFixed(0)} tok/s ETA ${duration(eta)}`;
    if (tty) process.stderr.write(`\r${line}\x1b[K`);
    else if (s.step % 10 === 0 || s.step === s.totalSteps) process.stderr.write(line + "\n");
  };
  const onEval = (e: PretrainEvalEvent) => {
    if (json) process.stdout.write(JSON.stringify(e) + "\n");
    else process.stderr.write(`${tty ? "\n" : ""}eval at step ${e.step}: held-out loss ${e.heldoutLoss.toFixed(4)} perplexity ${e.perplexity.toFixed(2)}\n`);
  };
  try {
    const result = await pretrain({
      config,
      data: values.data,
      out: values.out,
      resume: values.resume ?? false,
      ...(values.heldout !== undefined ? { heldout: values.heldout } : {}),
      ...(values.tokenizer !== undefined ? { tokenizer: values.tokenizer } : {}),
      ...(maxSteps !== undefined ? { maxSteps } : {}),
      signal: abort.signal,
      onStep,
      onEval,
    });
    const last = result.evals.at(-1);
    if (json) process.stdout.write(JSON.stringify({ type: "done", step: result.step, parameters: result.parameters, finished: result.finished, aborted: result.aborted, heldoutLoss: last?.heldoutLoss ?? null }) + "\n");
    else {
      process.stderr.write(
        `${tty ? "\n" : ""}pretrain: ${result.finished ? "finished" : "stopped"} at step ${result.step}/${config.training.steps} ` +
          `(${(result.parameters / 1e6).toFixed(2)}M parameters)${last ? `, held-out loss ${last.heldoutLoss.toFixed(4)}` : ""}; model in ${values.out}` +
          `${result.finished ? "" : " (continue with --resume)"}\n`,
      );
    }
  } finally {
    process.off("SIGINT", onSigint);
  }
}
