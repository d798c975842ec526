/**
 * Packs a corpus (jsonl of `{ text }` documents) into fixed-length training rows:
 * every document is tokenized without special tokens and followed by the eos
 * token, the documents are concatenated into one stream, and the stream is cut
 * into rows of `seqLen + 1` tokens that overlap by one (row i holds stream
 * positions [i*seqLen, (i+1)*seqLen]), so a row gives seqLen inputs and their
 * next-token targets. The tail shorter than a row is dropped.
 *
 * Output: a safetensors file with one tensor `tokens` [rows, seqLen + 1], U16 when
 * the vocabulary fits 16 bits, else I32; metadata records seq_len, vocab_size,
 * eos_token_id, documents and stream_tokens.
 */
import { readFile } from "node:fs/promises";
import { z } from "zod";
import { DeepGuardError, throwIfAborted } from "../errors.js";
import { readSafetensorsHeader, readTensorData, writeSafetensors } from "../io/safetensors.js";
import type { Tokenizer } from "../model/tokenizer.js";
import { parseOptions, signalSchema } from "../validate.js";
import { jsonlTexts } from "./jsonl.js";

export interface PackOptions {
  /** A jsonl file of `{ "text": string, ... }` objects (buildCorpus's train.jsonl or heldout.jsonl). */
  corpus: string;
  tokenizer: Tokenizer;
  /** Tokens in all, the special tokens included (for the row dtype and the metadata). */
  vocabSize: number;
  seqLen: number;
  out: string;
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

const optionsSchema = z
  .object({
    corpus: z.string().min(1),
    tokenizer: z.custom<Tokenizer>((v) => typeof v === "object" && v !== null && typeof (v as Tokenizer).encode === "function", "must be a Tokenizer"),
    vocabSize: z.number().int().positive().max(2 ** 31 - 1),
    seqLen: z.number().int().min(1).max(1 << 20),
    out: z.string().min(1),
    onProgress: z.custom<(done: number, total: number) => void>((v) => typeof v === "function").optional(),
    signal: signalSchema,
  })
  .strict();

export interface PackResult {
  rows: number;
  seqLen: number;
  documents: number;
  streamTokens: number;
  dtype: "U16" | "I32";
}

export async function packCorpus(options: PackOptions): Promise<PackResult> {
  const o = parseOptions(optionsSchema, options, "packCorpus");
  const eos = o.tokenizer.eosTokenId;
  if (eos === null) throw new DeepGuardError("ERR_TOKENIZER", "packCorpus: the tokenizer has no eos token to separate documents");
  const docs = jsonlTexts(
    await readFile(o.corpus, "utf8").catch((err) => {
      throw new DeepGuardError("ERR_ARGUMENT", `cannot read corpus ${o.corpus}: ${(err as Error).message}`);
    }),
    o.corpus,
  );
  let stream = new Int32Array(1 << 20);
  let length = 0;
  const push = (id: number) => {
    if (length === stream.length) {
      const grown = new Int32Array(stream.length * 2);
      grown.set(stream);
      stream = grown;
    }
    stream[length++] = id;
  };
  docs.forEach((text, i) => {
    if (i % 256 === 0) {
      throwIfAborted(o.signal, "packCorpus");
      o.onProgress?.(i, docs.length);
    }
    for (const id of o.tokenizer.encode(text, { addSpecialTokens: false })) push(id);
    push(eos);
  });
  o.onProgress?.(docs.length, docs.length);
  const rows = length > o.seqLen ? Math.floor((length - 1) / o.seqLen) : 0;
  if (rows === 0) throw new DeepGuardError("ERR_ARGUMENT", `packCorpus: ${length} tokens do not fill one row of ${o.seqLen + 1}`);
  const width = o.seqLen + 1;
  const dtype = o.vocabSize <= 65536 ? "U16" : "I32";
  const packed = dtype === "U16" ? new Uint16Array(rows * width) : new Int32Array(rows * width);
  for (let r = 0; r < rows; r++) packed.set(stream.subarray(r * o.seqLen, r * o.seqLen + width), r * width);
  await writeSafetensors(
    o.out,
    { tokens: { dtype, shape: [rows, width], data: new Uint8Array(packed.buffer, packed.byteOffset, packed.byteLength) } },
    {
      format: "deepguard-packed-v1",
      seq_len: String(o.seqLen),
      vocab_size: String(o.vocabSize),
      eos_token_id: String(eos),
      documents: String(docs.length),
      stream_tokens: String(length),
    },
  );
  return { rows, seqLen: o.seqLen, documents: docs.length, streamTokens: length, dtype };
}

/** Reads a file written by packCorpus: rows of seqLen + 1 token ids. */
export async function readPacked(path: string): Promise<{ rows: number; seqLen: number; vocabSize: number; tokens: Int32Array }> {
  const header = await readSafetensorsHeader(path);
  const info = header.tensors.get("tokens");
  const meta = header.metadata;
  if (meta.format !== "deepguard-packed-v1" || !info || info.shape.length !== 2 || (info.dtype !== "U16" && info.dtype !== "I32")) {
    throw new DeepGuardError("ERR_ARGUMENT", `${path} is not a packed corpus (deepguard-packed-v1 with a U16/I32 "tokens" [rows, seqLen + 1])`);
  }
  const [rows, width] = info.shape;
  const seqLen = Number(meta.seq_len);
  const vocabSize = Number(meta.vocab_size);
  if (seqLen + 1 !== width || !Number.isInteger(vocabSize) || vocabSize < 1) {
    throw new DeepGuardError("ERR_ARGUMENT", `${path}: metadata seq_len/vocab_size do not match the tokens tensor`);
  }
  const bytes = await readTensorData(header, "tokens");
  const src = info.dtype === "U16" ? new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2) : new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  const tokens = Int32Array.from(src);
  const bad = tokens.findIndex((t) => t < 0 || t >= vocabSize);
  if (bad >= 0) throw new DeepGuardError("ERR_TOKEN_ID", `${path}: token ${tokens[bad]} at position ${bad} is outside the vocabulary of ${vocabSize}`);
  return { rows, seqLen, vocabSize, tokens };
}
