/**
 * SVEN vulnerability-fix pairs for probing and training:
 *
 *   const train = await Dataset.fromSven("../shared/datasets/sven/train", { maxTokens: 1024 });
 *   for (const pair of await train.pairs(model)) pair.vulnerable.ids, pair.secure.changed;
 *   const batches = await train.batches(model, { batchSize: 8, seed: 1, epoch: 0 });
 *
 * A pair's sides carry token ids (as model.tokenize(text, { addSpecialTokens: false }))
 * and a per-token mask of the characters the fix changed: deleted characters on
 * the vulnerable side, added ones on the secure side.
 */
import { readdir, readFile, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { z } from "zod";
import { DeepGuardError } from "../errors.js";
import type { Model } from "../model/model.js";
import type { TokenSpans } from "../model/token-offsets.js";
import { deriveSeed, Random, shuffleInPlace } from "../random.js";
import { parseOptions } from "../validate.js";
import { normalizeCwe, parseSvenLine, recordId, recordLanguage, toUnitOffset, type InvalidLine, type SvenRecord } from "./sven.js";

export interface PairSide {
  /** The function source. */
  text: string;
  /** Tokenized with the model's tokenizer as model.tokenize does, no special tokens added. */
  ids: Int32Array;
  /** Per token: 1 when the token overlaps a changed character range of char_changes, else 0. */
  changed: Uint8Array;
}

export interface SvenPair {
  /** "<file basename>:<line number>" of the jsonl line (stable, unique). */
  id: string;
  /** e.g. "cwe-089". */
  cwe: string;
  language: "py" | "c";
  funcName: string;
  /** func_src_before. */
  vulnerable: PairSide;
  /** func_src_after. */
  secure: PairSide;
}

export interface DatasetOptions {
  /** Pairs with either side longer (in tokens) are dropped at pairs(model) time and counted (see dropped()). */
  maxTokens?: number;
  /** Keep only these CWEs ("cwe-089", "CWE-89" and "89" are the same). */
  cwes?: string[];
  /** A bad jsonl line: throw a DeepGuardError naming file, line and field (default), or skip it and list it in `invalid`. */
  onInvalid?: "throw" | "skip";
  /** Keep only the first `limit` records (after validation and the CWE filter, in file order). */
  limit?: number;
}

export interface BatchOptions {
  batchSize: number;
  seed: number;
  /** Each epoch has its own order for the same seed (default 0). */
  epoch?: number;
  /** Default true; false keeps the dataset order. */
  shuffle?: boolean;
  /** Drop a last batch smaller than batchSize (default false). */
  dropLast?: boolean;
}

/** Pairs dropped at pairs(model) time. */
export interface DroppedPairs {
  /** Either side longer than maxTokens. */
  tooLong: number;
  /** The tokens of a side do not reproduce its text, so no mask can be built (only with onInvalid "skip"). */
  unaligned: number;
}

interface Entry {
  id: string;
  file: string;
  line: number;
  cwe: string;
  language: "py" | "c";
  record: SvenRecord;
}

interface Tokenized {
  pairs: readonly SvenPair[];
  dropped: DroppedPairs;
}

/** jsonl files larger than this are refused rather than read into memory. */
const MAX_FILE_BYTES = 512 * 1024 * 1024;

const optionsSchema = z
  .object({
    maxTokens: z.number().int().positive().optional(),
    cwes: z.array(z.string()).optional(),
    onInvalid: z.enum(["throw", "skip"]).default("throw"),
    limit: z.number().int().positive().optional(),
  })
  .strict();

const batchSchema = z
  .object({
    batchSize: z.number().int().positive(),
    seed: z.number().int().refine(Number.isSafeInteger, "must be a safe integer"),
    epoch: z.number().int().nonnegative().default(0),
    shuffle: z.boolean().default(true),
    dropLast: z.boolean().default(false),
  })
  .strict();

export class Dataset {
  /** The resolved file or folder the records came from. */
  readonly source: string;
  /** Lines that failed validation and were skipped (onInvalid "skip"). */
  readonly invalid: readonly InvalidLine[];
  readonly #entries: readonly Entry[];
  readonly #maxTokens: number | undefined;
  readonly #onInvalid: "throw" | "skip";
  readonly #cache = new WeakMap<Model, Promise<Tokenized>>();

  private constructor(source: string, entries: Entry[], invalid: InvalidLine[], maxTokens: number | undefined, onInvalid: "throw" | "skip") {
    this.source = source;
    this.#entries = entries;
    this.invalid = invalid;
    this.#maxTokens = maxTokens;
    this.#onInvalid = onInvalid;
  }

  /** Reads a .jsonl file, or every *.jsonl file of a folder (sorted by name). */
  static async fromSven(path: string, options?: DatasetOptions): Promise<Dataset> {
    if (typeof path !== "string" || path.length === 0) {
      throw new DeepGuardError("ERR_ARGUMENT", "Dataset.fromSven needs a .jsonl file or a folder of them");
    }
    const opts = parseOptions(optionsSchema, options, "Dataset.fromSven");
    let cwes: Set<string> | undefined;
    if (opts.cwes) {
      cwes = new Set();
      for (const [i, raw] of opts.cwes.entries()) {
        const cwe = normalizeCwe(raw);
        if (!cwe) throw new DeepGuardError("ERR_ARGUMENT", `Dataset.fromSven option "cwes.${i}": "${raw}" is not a CWE id like "cwe-089"`);
        cwes.add(cwe);
      }
    }
    const source = resolve(path);
    const files = await svenFiles(source);
    const entries: Entry[] = [];
    const invalid: InvalidLine[] = [];
    for (const file of files) {
      const text = await readFile(file, "utf8").catch((err: Error) => {
        throw new DeepGuardError("ERR_DATASET", `cannot read ${file}: ${err.message}`, { cause: err });
      });
      const lines = text.split("\n");
      for (let i = 0; i < lines.length; i++) {
        const raw = lines[i].endsWith("\r") ? lines[i].slice(0, -1) : lines[i];
        if (raw.trim() === "") continue;
        const parsed = parseSvenLine(raw, file, i + 1);
        if (!parsed.ok) {
          const bad = parsed.invalid;
          if (opts.onInvalid === "throw") {
            throw new DeepGuardError("ERR_DATASET", `${bad.file}:${bad.line}: field "${bad.field}": ${bad.message}`);
          }
          invalid.push(bad);
          continue;
        }
        const cwe = normalizeCwe(parsed.record.vul_type)!;
        if (cwes && !cwes.has(cwe)) continue;
        entries.push({
          id: recordId(file, i + 1),
          file,
          line: i + 1,
          cwe,
          language: recordLanguage(parsed.record.file_name, cwe),
          record: parsed.record,
        });
      }
    }
    if (opts.limit !== undefined) entries.splice(opts.limit);
    if (entries.length === 0) {
      const why = invalid.length > 0 ? ` (${invalid.length} invalid lines skipped)` : cwes ? ` for CWEs ${[...cwes].join(", ")}` : "";
      throw new DeepGuardError("ERR_DATASET_EMPTY", `${source} holds no SVEN records${why}`);
    }
    return new Dataset(source, entries, invalid, opts.maxTokens, opts.onInvalid);
  }

  /** Records kept after validation and the CWE filter. */
  get size(): number {
    return this.#entries.length;
  }

  /** Record counts per CWE, sorted by CWE. */
  get cweCounts(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const e of [...this.#entries].sort((a, b) => (a.cwe < b.cwe ? -1 : a.cwe > b.cwe ? 1 : 0))) counts[e.cwe] = (counts[e.cwe] ?? 0) + 1;
    return counts;
  }

  /** Tokenized pairs in file order (cached per model); throws ERR_DATASET_EMPTY when maxTokens drops them all. */
  async pairs(model: Model): Promise<readonly SvenPair[]> {
    return (await this.#tokenized(model)).pairs;
  }

  /** How many pairs pairs(model) dropped, and why. */
  async dropped(model: Model): Promise<DroppedPairs> {
    return { ...(await this.#tokenized(model)).dropped };
  }

  /** Deterministic seeded shuffling and batching: the same (seed, epoch) gives the same batches. */
  async batches(model: Model, options: BatchOptions): Promise<SvenPair[][]> {
    const opts = parseOptions(batchSchema, options, "Dataset.batches");
    const order = [...(await this.pairs(model))];
    if (opts.shuffle) shuffleInPlace(order, new Random(deriveSeed(opts.seed, opts.epoch)));
    const out: SvenPair[][] = [];
    for (let i = 0; i < order.length; i += opts.batchSize) {
      const batch = order.slice(i, i + opts.batchSize);
      if (opts.dropLast && batch.length < opts.batchSize) break;
      out.push(batch);
    }
    return out;
  }

  #tokenized(model: Model): Promise<Tokenized> {
    if (model === null || typeof model !== "object" || typeof (model as Model).requireTokenizer !== "function") {
      return Promise.reject(new DeepGuardError("ERR_ARGUMENT", "Dataset.pairs needs a loaded Model"));
    }
    let cached = this.#cache.get(model);
    if (!cached) {
      cached = this.#tokenize(model);
      this.#cache.set(model, cached);
      cached.catch(() => this.#cache.delete(model)); // a failure is not cached
    }
    return cached;
  }

  async #tokenize(model: Model): Promise<Tokenized> {
    const tokenizer = model.requireTokenizer();
    const pairs: SvenPair[] = [];
    const dropped: DroppedPairs = { tooLong: 0, unaligned: 0 };
    for (const [index, e] of this.#entries.entries()) {
      // Long tokenizations block the event loop: yield now and then.
      if (index % 32 === 31) await new Promise((r) => setImmediate(r));
      const before = Int32Array.from(tokenizer.encode(e.record.func_src_before, { addSpecialTokens: false }));
      const after = Int32Array.from(tokenizer.encode(e.record.func_src_after, { addSpecialTokens: false }));
      if (this.#maxTokens !== undefined && (before.length > this.#maxTokens || after.length > this.#maxTokens)) {
        dropped.tooLong++;
        continue;
      }
      const beforeSpans = tokenizer.spans(e.record.func_src_before, before);
      const afterSpans = beforeSpans && tokenizer.spans(e.record.func_src_after, after);
      if (!beforeSpans || !afterSpans) {
        const field = beforeSpans ? "func_src_after" : "func_src_before";
        if (this.#onInvalid === "throw") {
          throw new DeepGuardError(
            "ERR_TOKENIZER",
            `${e.file}:${e.line}: field "${field}": the tokenizer's ids do not reproduce the text, so char_changes cannot be mapped onto tokens`,
          );
        }
        dropped.unaligned++;
        continue;
      }
      const side = (text: string, ids: Int32Array, spans: TokenSpans, changes: SvenRecord["char_changes"]["added"]): PairSide => ({
        text,
        ids,
        changed: changedMask(text, spans, changes),
      });
      const vulnerable = side(e.record.func_src_before, before, beforeSpans, e.record.char_changes.deleted);
      const secure = side(e.record.func_src_after, after, afterSpans, e.record.char_changes.added);
      pairs.push({ id: e.id, cwe: e.cwe, language: e.language, funcName: e.record.func_name, vulnerable, secure });
    }
    if (pairs.length === 0) {
      throw new DeepGuardError(
        "ERR_DATASET_EMPTY",
        `${this.source}: every pair was dropped (${dropped.tooLong} longer than maxTokens ${this.#maxTokens}, ${dropped.unaligned} unaligned)`,
      );
    }
    return { pairs, dropped };
  }
}

/** 1 for each token whose span overlaps one of the changed code-point ranges [char_start, char_end). */
export function changedMask(text: string, spans: TokenSpans, changes: readonly { char_start: number; char_end: number }[]): Uint8Array {
  const mask = new Uint8Array(spans.start.length);
  for (const c of changes) {
    const s = toUnitOffset(text, c.char_start);
    const e = toUnitOffset(text, c.char_end);
    if (e <= s) continue; // an empty range covers no character
    for (let t = 0; t < mask.length; t++) if (spans.start[t] < e && spans.end[t] > s) mask[t] = 1;
  }
  return mask;
}

async function svenFiles(source: string): Promise<string[]> {
  const st = await stat(source).catch((err: Error) => {
    throw new DeepGuardError("ERR_DATASET", `cannot read ${source}: ${err.message}`, { cause: err });
  });
  if (st.isFile()) {
    if (st.size > MAX_FILE_BYTES) throw new DeepGuardError("ERR_DATASET", `${source} is larger than ${MAX_FILE_BYTES} bytes`);
    return [source];
  }
  if (!st.isDirectory()) throw new DeepGuardError("ERR_DATASET", `${source} is neither a file nor a folder`);
  const names = (await readdir(source, { withFileTypes: true }))
    .filter((d) => d.isFile() && d.name.endsWith(".jsonl"))
    .map((d) => d.name)
    .sort();
  if (names.length === 0) throw new DeepGuardError("ERR_DATASET_EMPTY", `${source} has no .jsonl files`);
  for (const name of names) {
    const size = (await stat(join(source, name))).size;
    if (size > MAX_FILE_BYTES) throw new DeepGuardError("ERR_DATASET", `${join(source, name)} is larger than ${MAX_FILE_BYTES} bytes`);
  }
  return names.map((n) => join(source, n));
}
