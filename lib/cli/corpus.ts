/**
 * deepguard corpus build --source NAME=DIR:LICENSE [--source ...] --out DIR [--ext .py,.c,.h]
 *                        [--exclude PATH ...] [--heldout 0.02] [--json]
 * deepguard corpus pack --corpus FILE.jsonl --tokenizer DIR --seq-len 512 --out FILE.safetensors [--json]
 * scripts/build-corpus.sh runs both over Debian source packages.
 */
import { parseArgs } from "node:util";
import { buildCorpus, readExclusionTexts, type CorpusSource } from "../corpus/build.js";
import { packCorpus } from "../corpus/pack.js";
import { DeepGuardError } from "../errors.js";
import { Tokenizer } from "../model/tokenizer.js";

export const CORPUS_USAGE = `deepguard corpus build --source NAME=DIR:LICENSE [--source ...] --out DIR [--ext .py,.c,.h] [--exclude PATH ...] [--heldout 0.02] [--json]
  deepguard corpus pack --corpus FILE.jsonl --tokenizer DIR --seq-len 512 --out FILE.safetensors [--json]`;

const usage = (message: string) => new DeepGuardError("ERR_USAGE", `${message}\nusage: ${CORPUS_USAGE}`);

function progress(label: string): (done: number, total: number) => void {
  let last = 0;
  return (done, total) => {
    if (done !== total && Date.now() - last < 250) return;
    last = Date.now();
    process.stderr.write(process.stderr.isTTY ? `\r${label} ${done}/${total}   ` : `${label} ${done}/${total}\n`);
    if (process.stderr.isTTY && done === total) process.stderr.write("\n");
  };
}

function parseSource(raw: string): CorpusSource {
  const m = /^([^=]+)=(.+):([A-Za-z0-9.+-]+)$/.exec(raw);
  if (!m) throw usage(`--source must be NAME=DIR:LICENSE (an SPDX id), got "${raw}"`);
  return { name: m[1], dir: m[2], license: m[3] };
}

async function build(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      source: { type: "string", multiple: true },
      out: { type: "string" },
      ext: { type: "string" },
      exclude: { type: "string", multiple: true },
      heldout: { type: "string" },
      json: { type: "boolean" },
    },
    allowPositionals: true,
  });
  if (positionals.length > 0) throw usage(`unexpected argument "${positionals[0]}"`);
  if (!values.source?.length || !values.out) throw usage("--source and --out are required");
  const heldout = values.heldout === undefined ? undefined : Number(values.heldout);
  if (heldout !== undefined && !(heldout >= 0 && heldout < 1)) throw usage(`--heldout must be a number in [0, 1), got "${values.heldout}"`);
  const manifest = await buildCorpus({
    sources: values.source.map(parseSource),
    out: values.out,
    extensions: values.ext?.split(",").map((e) => e.trim()),
    exclude: await readExclusionTexts(values.exclude ?? []),
    heldoutFraction: heldout,
    onProgress: progress("reading files"),
  });
  if (values.json) process.stdout.write(JSON.stringify(manifest) + "\n");
  else {
    const f = manifest.files;
    process.stdout.write(
      `kept ${f.kept} of ${f.seen} files (${f.duplicates} duplicates, ${f.excludedOverlap} overlapping excluded texts, ` +
        `${f.skippedLarge} too large, ${f.skippedBinary} binary): train ${(manifest.train.bytes / 1e6).toFixed(1)} MB, ` +
        `held out ${(manifest.heldout.bytes / 1e6).toFixed(1)} MB -> ${values.out}\n`,
    );
  }
}

async function pack(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    options: { corpus: { type: "string" }, tokenizer: { type: "string" }, "seq-len": { type: "string" }, out: { type: "string" }, json: { type: "boolean" } },
    allowPositionals: true,
  });
  if (positionals.length > 0) throw usage(`unexpected argument "${positionals[0]}"`);
  if (!values.corpus || !values.tokenizer || !values.out || !values["seq-len"]) throw usage("--corpus, --tokenizer, --seq-len and --out are required");
  if (!/^\d+$/.test(values["seq-len"])) throw usage(`--seq-len must be a positive integer, got "${values["seq-len"]}"`);
  const tokenizer = await Tokenizer.fromDirectory(values.tokenizer);
  if (!tokenizer) throw new DeepGuardError("ERR_TOKENIZER", `${values.tokenizer} has no tokenizer.json`);
  const result = await packCorpus({
    corpus: values.corpus,
    tokenizer,
    vocabSize: tokenizer.vocabSize,
    seqLen: Number(values["seq-len"]),
    out: values.out,
    onProgress: progress("tokenizing documents"),
  });
  if (values.json) process.stdout.write(JSON.stringify(result) + "\n");
  else process.stdout.write(`${result.rows} rows of ${result.seqLen + 1} tokens (${result.streamTokens} tokens from ${result.documents} documents, ${result.dtype}) -> ${values.out}\n`);
}

export async function corpusCommand(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  if (sub === "build") await build(rest);
  else if (sub === "pack") await pack(rest);
  else throw usage(sub === undefined ? "corpus needs a subcommand" : `unknown corpus subcommand "${sub}"`);
}
