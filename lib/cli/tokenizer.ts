/**
 * deepguard tokenizer train --corpus <file or dir> [--corpus ...] [--vocab 8192] --out <dir>
 *   [--ext .py,.c,.h] [--min-frequency 2] [--json]
 * Progress on stderr; a summary (or with --json one JSON object) on stdout.
 */
import { parseArgs } from "node:util";
import { DeepGuardError } from "../errors.js";
import { trainTokenizer } from "../tokenizer/train.js";

export const TOKENIZER_USAGE =
  "deepguard tokenizer train --corpus <file-or-dir> [--corpus ...] --out <dir> [--vocab 8192] [--ext .py,.c] [--min-frequency 2] [--json]";

function integerFlag(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  if (!/^\d+$/.test(raw.trim())) throw new DeepGuardError("ERR_USAGE", `--${name} must be a non-negative integer, got "${raw}"`);
  return Number(raw);
}

export async function tokenizerCommand(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  if (sub !== "train") throw new DeepGuardError("ERR_USAGE", `usage: ${TOKENIZER_USAGE}`);
  const { values, positionals } = parseArgs({
    args: rest,
    options: {
      corpus: { type: "string", multiple: true },
      out: { type: "string" },
      vocab: { type: "string" },
      ext: { type: "string" },
      "min-frequency": { type: "string" },
      json: { type: "boolean" },
    },
    allowPositionals: true,
  });
  if (positionals.length > 0) throw new DeepGuardError("ERR_USAGE", `unexpected argument "${positionals[0]}"; usage: ${TOKENIZER_USAGE}`);
  if (!values.corpus?.length || !values.out) throw new DeepGuardError("ERR_USAGE", `--corpus and --out are required; usage: ${TOKENIZER_USAGE}`);
  const abort = new AbortController();
  process.once("SIGINT", () => abort.abort());
  const tty = process.stderr.isTTY;
  let last = 0;
  const result = await trainTokenizer({
    corpus: values.corpus,
    out: values.out,
    vocabSize: integerFlag("vocab", values.vocab),
    minFrequency: integerFlag("min-frequency", values["min-frequency"]),
    extensions: values.ext?.split(",").map((e) => e.trim()),
    signal: abort.signal,
    onProgress: ({ phase, done, total }) => {
      const now = Date.now();
      if (done !== total && now - last < 250) return;
      last = now;
      const line = `${phase === "read" ? "reading files" : "learning merges"} ${done}/${total}`;
      process.stderr.write(tty ? `\r${line.padEnd(40)}` : `${line}\n`);
    },
  });
  if (tty) process.stderr.write("\n");
  if (values.json) {
    process.stdout.write(JSON.stringify(result) + "\n");
    return;
  }
  process.stdout.write(
    `wrote ${values.out}/tokenizer.json: ${result.vocabSize} tokens (${result.merges} merges) from ${result.files} files, ` +
      `${(result.bytes / 1e6).toFixed(1)} MB, ${result.uniqueWords} distinct words in ${(result.seconds.read + result.seconds.merge).toFixed(1)} s` +
      (result.stoppedEarly ? " (the corpus ran out of pairs: the vocabulary is smaller than asked)" : "") +
      "\n",
  );
}
