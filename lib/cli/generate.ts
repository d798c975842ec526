/**
 * deepguard generate [<model-dir>] ("<prompt>" | --ids 1,2,3) [--adapter <dir>] [--guard <dir> | --no-guard] ...
 *   Without a model folder: the package's default model, guarded by its own
 *   guard and LoRA adapter (Guard.loadDefault) unless --no-guard. With a
 *   folder: plain sampling, or guided with --guard <dir>. Text streams to
 *   stdout; without a tokenizer the new ids are printed instead.
 */
import { parseArgs } from "node:util";
import { DeepGuardError } from "../errors.js";
import { Guard } from "../guard/guard.js";
import { Model } from "../model/model.js";
import { numberOption, parseIds, positionalsLast, splitModelDir } from "./args.js";
import { GUIDED_FLAGS, runGuidedGeneration } from "./guided.js";
import { modelLoadOptions, QUANTIZE_FLAGS } from "./load-options.js";

export const GENERATE_USAGE =
  'deepguard generate [<model-dir>] ("<prompt>" | --ids 1,2,3) [--adapter <dir>] [--guard <dir> | --no-guard] [--interval 64|inf] [--strength 1] [--n 4] [--candidates C]\n' +
  "      [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--seed S]   (no <model-dir>: the default model, guarded unless --no-guard)";

const FLAGS = {
  ids: { type: "string" },
  "max-tokens": { type: "string" },
  temperature: { type: "string" },
  "top-p": { type: "string" },
  "top-k": { type: "string" },
  seed: { type: "string" },
  adapter: { type: "string" },
  "no-guard": { type: "boolean" },
  ...GUIDED_FLAGS,
  ...QUANTIZE_FLAGS,
} as const;

export async function generateCommand(args: string[], usage: (message: string) => DeepGuardError): Promise<void> {
  const { values, positionals } = parseArgs({ args: positionalsLast(args, FLAGS), options: FLAGS, allowPositionals: true });
  const loadOptions = modelLoadOptions(values); // flags are checked before any file is read
  const byIds = values.ids !== undefined;
  const { modelDir, rest } = splitModelDir(
    positionals,
    byIds ? 0 : 1,
    usage,
    byIds ? "generate takes at most a model directory; --ids replaces the prompt" : "generate takes a prompt, after an optional model directory (or --ids)",
  );
  if (values.guard !== undefined && values["no-guard"]) throw usage("--guard and --no-guard contradict each other");
  const guided = values.guard !== undefined || (modelDir === undefined && !values["no-guard"]);
  if (!guided) {
    const stray = (["interval", "strength", "n", "candidates"] as const).find((f) => values[f] !== undefined);
    if (stray) throw usage(`--${stray} needs guidance: --guard <dir>, or the default model without --no-guard`);
  }
  const sampling = {
    maxTokens: numberOption(usage, "max-tokens", values["max-tokens"], true, 1, 1_000_000),
    temperature: numberOption(usage, "temperature", values.temperature, false, 0),
    topP: numberOption(usage, "top-p", values["top-p"], false, 0, 1, true),
    topK: numberOption(usage, "top-k", values["top-k"], true, 0, 2 ** 31 - 1),
    seed: numberOption(usage, "seed", values.seed, true, 0, Number.MAX_SAFE_INTEGER),
  };
  const prompt = byIds ? parseIds(usage, values.ids as string) : rest[0];
  const model = await Model.load(modelDir, loadOptions);
  const abort = new AbortController();
  process.once("SIGINT", () => abort.abort());
  try {
    // The default guard brings its own adapter unless another one is named.
    const guard = !guided ? null : values.guard !== undefined ? await Guard.load(values.guard, model) : await Guard.loadDefault(model, { adapter: values.adapter === undefined });
    if (values.adapter !== undefined) await model.loadAdapter(values.adapter);
    if (guard) await runGuidedGeneration(model, guard, prompt, values, { ...sampling, signal: abort.signal }, usage);
    else await streamPlain(model, prompt, { ...sampling, signal: abort.signal });
  } finally {
    model.dispose();
  }
}

async function streamPlain(model: Model, prompt: string | number[], options: Parameters<Model["generate"]>[1]): Promise<void> {
  // Without a tokenizer, the new token ids are printed instead of text.
  const asIds = model.tokenizer === null;
  let first = true;
  for await (const chunk of model.generate(prompt, options)) {
    if (!asIds) process.stdout.write(chunk.text);
    else
      for (const id of chunk.tokens) {
        process.stdout.write(`${first ? "" : " "}${id}`);
        first = false;
      }
  }
  process.stdout.write("\n");
}
