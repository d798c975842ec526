/**
 * Builds a pretraining corpus from source trees: source files of the chosen
 * languages, exact duplicates removed (after whitespace normalization), files that
 * overlap an evaluation text (SVEN functions, sec_eval scenarios) excluded so that
 * nothing the model is tested on leaks into its training data, and a deterministic
 * train / held-out split by content hash. Output: train.jsonl and heldout.jsonl
 * (one `{ text, source, path }` object per file) and manifest.json.
 */
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, stat } from "node:fs/promises";
import { join, relative } from "node:path";
import { z } from "zod";
import { DeepGuardError, throwIfAborted } from "../errors.js";
import { writeFileAtomic, writeJsonAtomic } from "../io/atomic.js";
import { parseOptions, signalSchema } from "../validate.js";

export interface CorpusSource {
  /** A name for the source (e.g. the Debian source package). */
  name: string;
  /** Directory holding its files. */
  dir: string;
  /** SPDX licence identifier, recorded in the manifest. */
  license: string;
}

export interface BuildCorpusOptions {
  sources: CorpusSource[];
  out: string;
  /** File extensions to keep (default .py .c .h). */
  extensions?: string[];
  /** Texts that must not leak into the corpus (evaluation functions and scenarios). */
  exclude?: string[];
  /** A file sharing at least this fraction of an excluded text's distinctive lines is dropped (default 0.5). */
  overlapThreshold?: number;
  /** Fraction of files held out (default 0.02). */
  heldoutFraction?: number;
  /** Files larger than this are skipped as generated data (default 1 MB). */
  maxFileBytes?: number;
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

const optionsSchema = z
  .object({
    sources: z
      .array(z.object({ name: z.string().min(1), dir: z.string().min(1), license: z.string().min(1) }).strict())
      .min(1),
    out: z.string().min(1),
    extensions: z.array(z.string().regex(/^\.[^./\\]+$/, "must look like .py")).min(1).default([".py", ".c", ".h"]),
    exclude: z.array(z.string()).default([]),
    overlapThreshold: z.number().gt(0).max(1).default(0.5),
    heldoutFraction: z.number().min(0).lt(1).default(0.02),
    maxFileBytes: z.number().int().positive().default(1 << 20),
    onProgress: z.custom<(done: number, total: number) => void>((v) => typeof v === "function").optional(),
    signal: signalSchema,
  })
  .strict();

export interface CorpusManifest {
  sources: { name: string; license: string; files: number; bytes: number }[];
  extensions: string[];
  files: { seen: number; kept: number; duplicates: number; excludedOverlap: number; skippedLarge: number; skippedBinary: number };
  train: { files: number; bytes: number };
  heldout: { files: number; bytes: number };
  excludedTexts: number;
}

/** Whitespace-insensitive form of a line or text: runs of whitespace become one space, trimmed. */
export function normalizeWhitespace(s: string): string {
  return s.replace(/\s+/g, " ").trim();
}

/** Boilerplate that every file of a language shares: it identifies nothing. */
const BOILERPLATE = /^(#\s*include\b|import\s|from\s+\S+\s+import\s)/;

/**
 * A line counts for overlap when it carries content: at least 12 non-space
 * characters after normalization, and not an include or import.
 */
function distinctiveLines(text: string): Set<string> {
  const out = new Set<string>();
  for (const line of text.split("\n")) {
    const n = normalizeWhitespace(line);
    if (n.replace(/ /g, "").length >= 12 && !BOILERPLATE.test(n)) out.add(n);
  }
  return out;
}

/** Texts with fewer distinctive lines are too generic to recognize in a file, and a match needs this many lines. */
const MIN_MATCHED_LINES = 3;

/**
 * Finds files that overlap excluded texts: each excluded text's distinctive lines
 * are indexed; a file overlaps when it contains at least `threshold` of some
 * text's lines and at least MIN_MATCHED_LINES of them.
 */
export class OverlapIndex {
  readonly #lineToTexts = new Map<string, number[]>();
  readonly #sizes: number[] = [];
  readonly #threshold: number;

  constructor(texts: readonly string[], threshold: number) {
    this.#threshold = threshold;
    texts.forEach((text, id) => {
      const lines = distinctiveLines(text);
      this.#sizes.push(lines.size);
      if (lines.size < MIN_MATCHED_LINES) return;
      for (const line of lines) {
        const list = this.#lineToTexts.get(line);
        if (list) list.push(id);
        else this.#lineToTexts.set(line, [id]);
      }
    });
  }

  /** Index of the first excluded text that `text` overlaps, or -1. */
  match(text: string): number {
    const hits = new Map<number, number>();
    for (const line of distinctiveLines(text)) {
      for (const id of this.#lineToTexts.get(line) ?? []) {
        const n = (hits.get(id) ?? 0) + 1;
        hits.set(id, n);
        const size = this.#sizes[id];
        if (n >= Math.max(MIN_MATCHED_LINES, Math.ceil(this.#threshold * size))) return id;
      }
    }
    return -1;
  }
}

async function listFiles(dir: string, extensions: string[]): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    const entries = await readdir(d, { withFileTypes: true }).catch((err) => {
      throw new DeepGuardError("ERR_ARGUMENT", `corpus source ${d} cannot be read: ${(err as Error).message}`);
    });
    for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile() && extensions.some((x) => e.name.endsWith(x))) out.push(p);
    }
  };
  await walk(dir);
  return out;
}

export async function buildCorpus(options: BuildCorpusOptions): Promise<CorpusManifest> {
  const o = parseOptions(optionsSchema, options, "buildCorpus");
  const index = new OverlapIndex(o.exclude, o.overlapThreshold);
  const lists: { source: CorpusSource; files: string[] }[] = [];
  for (const source of o.sources) {
    if (!(await stat(source.dir).then((s) => s.isDirectory(), () => false))) {
      throw new DeepGuardError("ERR_ARGUMENT", `corpus source "${source.name}": ${source.dir} is not a directory`);
    }
    lists.push({ source, files: await listFiles(source.dir, o.extensions) });
  }
  const total = lists.reduce((n, l) => n + l.files.length, 0);
  const seenHashes = new Set<string>();
  const counts = { seen: 0, kept: 0, duplicates: 0, excludedOverlap: 0, skippedLarge: 0, skippedBinary: 0 };
  const perSource: CorpusManifest["sources"] = [];
  const parts = { train: [] as string[], heldout: [] as string[] };
  const bytes = { train: 0, heldout: 0 };
  for (const { source, files } of lists) {
    const stats = { name: source.name, license: source.license, files: 0, bytes: 0 };
    for (const file of files) {
      throwIfAborted(o.signal, "buildCorpus");
      counts.seen++;
      if (counts.seen % 200 === 0) o.onProgress?.(counts.seen, total);
      const data = await readFile(file);
      if (data.length > o.maxFileBytes) {
        counts.skippedLarge++;
        continue;
      }
      if (data.includes(0)) {
        counts.skippedBinary++;
        continue;
      }
      const text = data.toString("utf8");
      const hash = createHash("sha256").update(normalizeWhitespace(text)).digest("hex");
      if (seenHashes.has(hash)) {
        counts.duplicates++;
        continue;
      }
      seenHashes.add(hash);
      if (index.match(text) >= 0) {
        counts.excludedOverlap++;
        continue;
      }
      counts.kept++;
      stats.files++;
      stats.bytes += data.length;
      // The split follows the content hash: stable across runs and machines.
      const split = parseInt(hash.slice(0, 8), 16) / 2 ** 32 < o.heldoutFraction ? "heldout" : "train";
      parts[split].push(JSON.stringify({ text, source: source.name, path: relative(source.dir, file) }));
      bytes[split] += data.length;
    }
    perSource.push(stats);
  }
  o.onProgress?.(total, total);
  if (counts.kept === 0) throw new DeepGuardError("ERR_ARGUMENT", `buildCorpus: no ${o.extensions.join("/")} files were kept`);
  await mkdir(o.out, { recursive: true });
  await writeFileAtomic(join(o.out, "train.jsonl"), parts.train.map((l) => l + "\n").join(""));
  await writeFileAtomic(join(o.out, "heldout.jsonl"), parts.heldout.map((l) => l + "\n").join(""));
  const manifest: CorpusManifest = {
    sources: perSource,
    extensions: o.extensions,
    files: counts,
    train: { files: parts.train.length, bytes: bytes.train },
    heldout: { files: parts.heldout.length, bytes: bytes.heldout },
    excludedTexts: o.exclude.length,
  };
  await writeJsonAtomic(join(o.out, "manifest.json"), manifest);
  return manifest;
}

/**
 * Texts to keep out of a corpus, from files or directories (recursively): each
 * .py/.c/.h file whole, and from .jsonl files each line's SVEN functions
 * (`func_src_before`, `func_src_after`) or its `text`.
 */
export async function readExclusionTexts(paths: readonly string[]): Promise<string[]> {
  const texts: string[] = [];
  const visit = async (path: string): Promise<void> => {
    const info = await stat(path).catch((err) => {
      throw new DeepGuardError("ERR_ARGUMENT", `exclusion path ${path} cannot be read: ${(err as Error).message}`);
    });
    if (info.isDirectory()) {
      for (const name of (await readdir(path)).sort()) await visit(join(path, name));
    } else if (/\.(py|c|h)$/.test(path)) {
      texts.push(await readFile(path, "utf8"));
    } else if (path.endsWith(".jsonl")) {
      (await readFile(path, "utf8")).split("\n").forEach((line, i) => {
        if (line.trim() === "") return;
        let o: Record<string, unknown>;
        try {
          o = JSON.parse(line);
        } catch {
          throw new DeepGuardError("ERR_ARGUMENT", `${path}:${i + 1}: not valid JSON`);
        }
        for (const key of ["func_src_before", "func_src_after", "text"]) if (typeof o[key] === "string") texts.push(o[key] as string);
      });
    }
  };
  for (const p of paths) await visit(p);
  return texts;
}
