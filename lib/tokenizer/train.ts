/**
 * `trainTokenizer`: a byte-level BPE tokenizer (Qwen2 layout) trained on source
 * files, written as tokenizer.json + tokenizer_config.json that Hugging Face
 * tokenizers and this engine's Tokenizer both load.
 */
import { mkdir, readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { jsonlTexts } from "../corpus/jsonl.js";
import { DeepGuardError, throwIfAborted } from "../errors.js";
import { writeJsonAtomic } from "../io/atomic.js";
import { parseOptions, signalSchema } from "../validate.js";
import { trainBpe, WordCounter } from "./bpe-trainer.js";
import { tokenizerFiles } from "./byte-level.js";

export const DEFAULT_SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"] as const;

export interface TrainTokenizerOptions {
  /** Files or directories (searched recursively) of training text; a .jsonl file gives each line's `text`. */
  corpus: string[];
  /** Tokens in all, the special tokens included (default 8192). */
  vocabSize?: number;
  /** Output directory (created if needed). */
  out: string;
  /** Only files with these extensions when walking directories (default: all text files). */
  extensions?: string[];
  /** Special tokens, end-of-text first, then padding (default <|endoftext|>, <|pad|>). */
  specialTokens?: string[];
  /** Pairs seen fewer times are never merged (default 2). */
  minFrequency?: number;
  /** model_max_length in tokenizer_config.json (default 2048). */
  modelMaxLength?: number;
  onProgress?: (event: { phase: "read" | "merge"; done: number; total: number }) => void;
  signal?: AbortSignal;
}

const optionsSchema = z
  .object({
    corpus: z.array(z.string().min(1)).min(1),
    vocabSize: z.number().int().min(258).max(1 << 20).default(8192),
    out: z.string().min(1),
    extensions: z.array(z.string().regex(/^\.[^./\\]+$/, "must look like .py")).optional(),
    specialTokens: z.array(z.string().min(1)).min(1).max(64).default([...DEFAULT_SPECIAL_TOKENS]),
    minFrequency: z.number().int().min(1).default(2),
    modelMaxLength: z.number().int().positive().default(2048),
    onProgress: z.custom<TrainTokenizerOptions["onProgress"]>((v) => typeof v === "function").optional(),
    signal: signalSchema,
  })
  .strict();

export interface TrainTokenizerResult {
  vocabSize: number;
  merges: number;
  files: number;
  bytes: number;
  words: number;
  uniqueWords: number;
  /** The corpus had too few distinct pairs for the vocabulary asked for. */
  stoppedEarly: boolean;
  seconds: { read: number; merge: number };
}

/** Every regular file under the given paths, in a stable order. */
async function listFiles(paths: string[], extensions: string[] | undefined): Promise<string[]> {
  const out: string[] = [];
  const walk = async (path: string, explicit: boolean): Promise<void> => {
    const info = await stat(path).catch((err) => {
      throw new DeepGuardError("ERR_ARGUMENT", `corpus path ${path} cannot be read: ${(err as Error).message}`);
    });
    if (info.isDirectory()) {
      for (const name of (await readdir(path)).sort()) if (!name.startsWith(".")) await walk(join(path, name), false);
    } else if (info.isFile() && (explicit || !extensions || extensions.some((e) => path.endsWith(e)))) out.push(path);
  };
  for (const p of paths) await walk(p, true);
  return out;
}

/** Binary files (a NUL byte early on) are not text: skipped. */
function looksBinary(data: Buffer): boolean {
  return data.subarray(0, 8192).includes(0);
}

export async function trainTokenizer(options: TrainTokenizerOptions): Promise<TrainTokenizerResult> {
  const o = parseOptions(optionsSchema, options, "trainTokenizer");
  if (new Set(o.specialTokens).size !== o.specialTokens.length) {
    throw new DeepGuardError("ERR_ARGUMENT", "trainTokenizer option \"specialTokens\": tokens must be distinct");
  }
  const learned = o.vocabSize - o.specialTokens.length;
  if (learned < 256) throw new DeepGuardError("ERR_ARGUMENT", `trainTokenizer: vocabSize must leave room for the 256 byte tokens and ${o.specialTokens.length} special tokens`);
  const t0 = performance.now();
  const files = await listFiles(o.corpus, o.extensions);
  if (files.length === 0) throw new DeepGuardError("ERR_ARGUMENT", `trainTokenizer: no corpus files under ${o.corpus.join(", ")}`);
  const counter = new WordCounter();
  let bytes = 0;
  for (const [i, file] of files.entries()) {
    throwIfAborted(o.signal, "trainTokenizer");
    const data = await readFile(file);
    if (looksBinary(data)) continue;
    bytes += data.length;
    if (file.endsWith(".jsonl")) for (const text of jsonlTexts(data.toString("utf8"), file)) counter.add(text);
    else counter.add(data.toString("utf8"));
    if (i % 64 === 0) o.onProgress?.({ phase: "read", done: i + 1, total: files.length });
  }
  o.onProgress?.({ phase: "read", done: files.length, total: files.length });
  if (counter.total === 0) throw new DeepGuardError("ERR_ARGUMENT", "trainTokenizer: the corpus holds no text");
  const t1 = performance.now();
  throwIfAborted(o.signal, "trainTokenizer");
  const bpe = trainBpe(counter.counts, {
    vocabSize: learned,
    minFrequency: o.minFrequency,
    onProgress: (done, total) => o.onProgress?.({ phase: "merge", done, total }),
  });
  const t2 = performance.now();
  const { tokenizerJson, tokenizerConfig, vocabSize } = tokenizerFiles(bpe.tokens, bpe.merges, o.specialTokens, o.modelMaxLength);
  await mkdir(o.out, { recursive: true });
  await writeJsonAtomic(join(o.out, "tokenizer.json"), tokenizerJson);
  await writeJsonAtomic(join(o.out, "tokenizer_config.json"), tokenizerConfig);
  return {
    vocabSize,
    merges: bpe.merges.length,
    files: files.length,
    bytes,
    words: counter.total,
    uniqueWords: counter.counts.size,
    stoppedEarly: bpe.stoppedEarly,
    seconds: { read: (t1 - t0) / 1000, merge: (t2 - t1) / 1000 },
  };
}
