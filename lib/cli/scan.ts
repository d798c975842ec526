/**
 * deepguard scan [<model-dir> --guard <dir>] <file> [--html <out.html>] [--json]
 *
 * Scores a source file with a trained guard: the sequence score (1 = secure-
 * looking, 0 = vulnerable-looking) and a per-line heat map (a line's score is the
 * mean score of the tokens that overlap it; lines no token touches are left
 * out). The file is tokenized as model.tokenize does, no special tokens added.
 * --html writes a page that shades each token; --json prints
 * {"sequence", "tokens": [{"id", "text", "score"}], "lines": [{"line", "score"}]}.
 */
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { DeepGuardError } from "../errors.js";
import { Guard } from "../guard/guard.js";
import { writeFileAtomic } from "../io/atomic.js";
import { Model } from "../model/model.js";
import { splitModelDir } from "./args.js";
import { modelLoadOptions, QUANTIZE_FLAGS } from "./load-options.js";

export const SCAN_USAGE = "deepguard scan [<model-dir> --guard <dir>] <file> [--html <out.html>] [--json]";

function usage(message: string): DeepGuardError {
  return new DeepGuardError("ERR_USAGE", `${message}\nusage: ${SCAN_USAGE}`);
}

export interface ScanResult {
  sequence: number;
  tokens: { id: number; text: string; score: number }[];
  lines: { line: number; score: number }[];
}

/** Each token's [start, end) in the text: exact spans when the tokenizer can rebuild them, else decoded pieces laid end to end. */
function tokenRanges(model: Model, text: string, ids: number[]): { start: number[]; end: number[] } {
  const spans = model.tokenizer?.spans(text, ids) ?? null;
  if (spans) return { start: Array.from(spans.start), end: Array.from(spans.end) };
  const start: number[] = [], end: number[] = [];
  let at = 0;
  for (const id of ids) {
    const piece = model.detokenize([id]);
    start.push(Math.min(at, text.length));
    at += piece.length;
    end.push(Math.min(at, text.length));
  }
  return { start, end };
}

export function scanReport(text: string, ids: number[], scores: Float32Array, sequence: number, ranges: { start: number[]; end: number[] }): ScanResult {
  // A character split across two tokens (the bytes of "é") goes to the first of
  // them, so the token texts concatenate to the file.
  let done = 0;
  const tokens = ids.map((id, i) => {
    const from = Math.max(ranges.start[i], done), to = Math.max(ranges.end[i], from);
    done = to;
    return { id, text: text.slice(from, to), score: scores[i] };
  });
  // Line i covers [lineStart[i], lineStart[i + 1]) including its newline.
  const lineStart = [0];
  for (let i = 0; i < text.length; i++) if (text[i] === "\n" && i + 1 < text.length) lineStart.push(i + 1);
  const sum = new Float64Array(lineStart.length), count = new Int32Array(lineStart.length);
  let line = 0;
  for (let t = 0; t < ids.length; t++) {
    const s = ranges.start[t], e = Math.max(ranges.end[t], s + 1);
    while (line > 0 && lineStart[line] > s) line--;
    while (line + 1 < lineStart.length && lineStart[line + 1] <= s) line++;
    for (let l = line; l < lineStart.length && lineStart[l] < e; l++) {
      // A newline-only piece belongs to the line it ends, not the next one.
      if (l > line && text.slice(s, e).trim() === "") break;
      sum[l] += scores[t];
      count[l]++;
    }
  }
  const lines: ScanResult["lines"] = [];
  for (let l = 0; l < lineStart.length; l++) if (count[l] > 0) lines.push({ line: l + 1, score: sum[l] / count[l] });
  return { sequence, tokens, lines };
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

/** Red (0, vulnerable-looking) through yellow to green (1, secure-looking). */
function shade(score: number, alpha: number): string {
  const hue = Math.round(120 * Math.max(0, Math.min(1, score)));
  return `hsla(${hue}, 85%, 55%, ${alpha})`;
}

export function scanHtml(file: string, r: ScanResult): string {
  let body = "";
  for (const t of r.tokens) {
    if (t.text === "") continue; // the second half of a split character
    body += `<span style="background:${shade(t.score, 0.55)}" title="token ${t.id}: ${t.score.toFixed(4)}">${escapeHtml(t.text)}</span>`;
  }
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>deepguard scan: ${escapeHtml(file)}</title>
<style>body{font-family:sans-serif;margin:2em}pre{font-family:ui-monospace,monospace;line-height:1.45;white-space:pre-wrap}</style></head>
<body><h1>${escapeHtml(file)}</h1>
<p>Sequence security score <b>${r.sequence.toFixed(4)}</b> (1 = secure-looking, 0 = vulnerable-looking); ${r.tokens.length} tokens. Hover a token for its score.</p>
<pre>${body}</pre></body></html>
`;
}

function terminalHeatMap(text: string, r: ScanResult, color: boolean): string {
  const lines = text.split("\n");
  const byLine = new Map(r.lines.map((l) => [l.line, l.score]));
  const width = String(lines.length).length;
  let out = `sequence score ${r.sequence.toFixed(4)} (1 = secure-looking, 0 = vulnerable-looking), ${r.tokens.length} tokens\n`;
  lines.forEach((src, i) => {
    if (i === lines.length - 1 && src === "") return;
    const s = byLine.get(i + 1);
    const filled = s === undefined ? 0 : Math.round(s * 8);
    const bar = s === undefined ? " ".repeat(8) : "█".repeat(filled) + "░".repeat(8 - filled);
    const score = s === undefined ? "     " : s.toFixed(3);
    let row = `${String(i + 1).padStart(width)} ${score} ${bar} │ ${src}`;
    if (color && s !== undefined) {
      const code = s < 0.35 ? 31 : s < 0.65 ? 33 : 32; // red, yellow, green
      row = `\x1b[${code}m${String(i + 1).padStart(width)} ${score} ${bar}\x1b[0m │ ${src}`;
    }
    out += row + "\n";
  });
  return out;
}

export async function scanCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    options: { guard: { type: "string" }, html: { type: "string" }, json: { type: "boolean" }, ...QUANTIZE_FLAGS },
    allowPositionals: true,
  });
  const loadOptions = modelLoadOptions(values); // flags are checked before any file is read
  const { modelDir, rest } = splitModelDir(positionals, 1, usage, "scan takes a file, after an optional model directory");
  // The default model has its own guard; any other model needs one named.
  if (values.guard === undefined && modelDir !== undefined) throw usage("scan needs --guard <dir> (or no model directory: the default model and its guard)");
  const [file] = rest;
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new DeepGuardError("ERR_ARGUMENT", `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  const model = await Model.load(modelDir, loadOptions);
  try {
    const guard = values.guard !== undefined ? await Guard.load(values.guard, model) : await Guard.loadDefault(model);
    const ids = model.tokenize(text);
    if (ids.length === 0) throw new DeepGuardError("ERR_ARGUMENT", `${file} has no tokens to score`);
    const scored = await guard.score(ids);
    const ranges = tokenRanges(model, text, ids);
    const report = scanReport(text, ids, scored.tokens, scored.sequence, ranges);
    if (values.html !== undefined) await writeFileAtomic(values.html, scanHtml(file, report));
    if (values.json) process.stdout.write(JSON.stringify(report) + "\n");
    else process.stdout.write(terminalHeatMap(text, report, process.stdout.isTTY === true && !process.env.NO_COLOR));
  } finally {
    model.dispose();
  }
}
